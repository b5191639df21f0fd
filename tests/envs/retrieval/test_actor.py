"""One index in a Ray actor on a real local Ray cluster: the same hits as the in-process
index, one actor per name, and clear errors for a mismatched or failed actor."""

import pytest
import ray

from envs.retrieval import ActorRetriever, RetrievalError, build_or_load_index, start_retriever_actor, write_corpus_jsonl

from .conftest import make_documents


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_actor_retriever_matches_the_local_index(ray_cluster, module_corpus_path):
    retriever = start_retriever_actor(module_corpus_path, "bm25", name="test-retriever")
    local = build_or_load_index(module_corpus_path, "bm25")
    queries = ["Kestrel jets island resorts", "Vantor influenza vaccines", "zzzq"]
    assert retriever.search(queries, topk=3) == local.search(queries, topk=3)
    assert retriever.search(queries, topk=3)[0][0].document.title == "Kestrel Airlines"

    # Shipped to a task, the handle searches the same actor.
    @ray.remote(num_cpus=0)
    def search_from_worker(r: ActorRetriever):
        return r.search(["Pemberly football league cup"], 1)[0][0].document.title

    assert ray.get(search_from_worker.remote(retriever)) == "Pemberly FC"

    again = start_retriever_actor(module_corpus_path, "bm25", name="test-retriever")
    assert again.handle._actor_id == retriever.handle._actor_id  # get_if_exists: one shared actor
    with pytest.raises(ValueError, match="topk"):
        retriever.search(["volcano"], topk=0)


def test_an_actor_serving_another_corpus_is_refused(ray_cluster, module_corpus_path, tmp_path):
    running = start_retriever_actor(module_corpus_path, "bm25", name="test-retriever-2")  # held: a
    # non-detached actor dies with its last handle
    other = write_corpus_jsonl(make_documents()[:5], tmp_path / "other.jsonl")
    with pytest.raises(ValueError, match="already serves"):
        start_retriever_actor(other, "bm25", name="test-retriever-2")
    assert running.search(["Lumen Shakespeare"], 1)[0][0].document.title == "Lumen Theatre"


def test_failed_start_and_dead_actor_are_clear_errors(ray_cluster, module_corpus_path, tmp_path):
    with pytest.raises(RuntimeError, match="failed to start.*missing.jsonl"):
        start_retriever_actor(tmp_path / "missing.jsonl", "bm25", name="test-retriever-missing")
    retriever = start_retriever_actor(module_corpus_path, "bm25", name="test-retriever-killed")
    ray.kill(retriever.handle, no_restart=True)
    with pytest.raises(RetrievalError, match="did not answer"):
        retriever.search(["volcano"], topk=1)
