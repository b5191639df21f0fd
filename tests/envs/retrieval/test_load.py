"""The retrieval server under load on 127.0.0.1: concurrent clients for a bounded time get
every answer (0 errors) while requests over each limit, sent among them, are refused with
their 4xx and field; the server then still serves. test_server.py covers each bad request
on an idle server; this is the same under load, with limits set from the command line,
and bodies sent chunked (no Content-Length)."""

import pytest
import requests

from envs.retrieval import HttpRetriever, start_server_process

from .conftest import FACTS
from .load import LOAD_LIMITS, check_rejection, limit_args, rejections, run_load

QUERIES = [f"{title} {text.split()[-1]}" for title, text in FACTS.items()] + ["nothing matches zzzq", "the of and"]


@pytest.fixture(scope="module")
def server(module_corpus_path):
    with start_server_process(module_corpus_path, "bm25", port=0, timeout=120, extra_args=limit_args(LOAD_LIMITS)) as handle:
        yield handle


@pytest.mark.timeout(60)
def test_concurrent_clients_get_every_answer_while_bad_requests_are_refused(server):
    result = run_load(server.url, clients=6, duration_s=4.0, queries=QUERIES, limits=LOAD_LIMITS)
    summary = result.summary()
    assert result.errors == [] and result.rejection_failures == [], summary["first_errors"]
    assert min(result.per_client) >= 5, result.per_client  # every client was served, none starved
    assert set(result.rejected) == set(rejections(LOAD_LIMITS)), result.rejected  # each kind refused at least once
    assert 0 < summary["p50_ms"] <= summary["p99_ms"] <= summary["max_ms"]

    assert server.alive
    (hits,) = HttpRetriever(server.url, timeout=5, retries=0).search(["Corvin suspension bridge"], 1)
    assert hits[0].document.title == "Corvin Bridge"


@pytest.mark.parametrize("name", list(rejections(LOAD_LIMITS)))
def test_each_limit_set_on_the_command_line_is_enforced(server, name):
    assert check_rejection(server.url, name, LOAD_LIMITS) is None


def test_a_chunked_body_within_the_limit_is_served(server):
    body = b'{"queries": ["Lake Verrin trout"], "topk": 1}'
    response = requests.post(f"{server.url}/retrieve", data=iter([body[:10], body[10:]]),
                             headers={"content-type": "application/json"}, timeout=10)
    assert response.status_code == 200 and response.json()["result"][0][0]["contents"].startswith('"Lake Verrin"')


def test_a_limit_below_one_is_refused_naming_the_option(module_corpus_path):
    with pytest.raises(RuntimeError, match=r"(?s)exited with code 1.*max_body_bytes=0 \(--max-body-bytes\): must be at least 1"):
        start_server_process(module_corpus_path, "bm25", port=0, timeout=60, extra_args=["--max-body-bytes", "0"])
