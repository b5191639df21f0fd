"""A real local search server on 127.0.0.1 over the small generated world, shared by the
module's tests; each test starts with no queued faults and an empty request log."""

import pytest

from envs.data import generate_world

API_KEY = "test-key-5f2c9a7e"  # what the keyed server requires; tests check it never leaks


@pytest.fixture(scope="session")
def world():
    return generate_world(seed=0, size="small")


@pytest.fixture(scope="session")
def world_index(world):
    from envs.retrieval.bm25 import BM25Index

    return BM25Index.build(world.documents)


@pytest.fixture(scope="session")
def _server(world, world_index):
    from envs.webqa import start_local_search_server

    with start_local_search_server(documents=world.documents, index=world_index, api_key=API_KEY) as server:
        yield server


@pytest.fixture
def server(_server):
    _server.reset()
    yield _server
    _server.reset()


@pytest.fixture
def api_key_env(monkeypatch):
    monkeypatch.setenv("WEBQA_TEST_KEY", API_KEY)
    return "WEBQA_TEST_KEY"


@pytest.fixture
def entity(world):
    """A document of the world whose title is a good query."""
    return next(d for d in world.documents if d.title.count(" ") == 1)
