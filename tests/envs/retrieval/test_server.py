"""The HTTP retriever as a real subprocess on 127.0.0.1: the Search-R1 wire format, a 4xx
with a message for every kind of bad request (and the server survives them all), and the
HTTP client's retries against dead, silent and flaky servers."""

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from envs.retrieval import HttpRetriever, RetrievalError, build_or_load_index, start_server_process


@pytest.fixture(scope="module")
def server(module_corpus_path):
    with start_server_process(module_corpus_path, "bm25", port=0, timeout=120) as handle:
        yield handle
    assert not handle.alive


def post(server, body=None, **kwargs):
    return requests.post(f"{server.url}/retrieve", json=body, timeout=10, **kwargs)


def test_health_and_search_r1_format(server):
    assert server.url.startswith("http://127.0.0.1:") and not server.url.endswith(":0")
    assert requests.get(f"{server.url}/health", timeout=5).json() == {"status": "ok", "index": "bm25", "num_docs": 30}

    scored = post(server, {"queries": ["Mount Tesskar volcano", "Gilder Bank savings"], "topk": 2, "return_scores": True})
    assert scored.status_code == 200
    result = scored.json()["result"]
    assert len(result) == 2 and all(len(hits) <= 2 for hits in result)
    first = result[0][0]
    assert set(first) == {"document", "score"} and set(first["document"]) == {"id", "contents"}
    assert first["document"]["contents"].startswith('"Mount Tesskar"\n') and isinstance(first["score"], float)
    assert result[1][0]["document"]["contents"].startswith('"Gilder Bank"\n')

    bare = post(server, {"queries": ["Mount Tesskar volcano"], "topk": 2}).json()["result"]  # return_scores: false
    assert bare == [[hit["document"] for hit in result[0]]]
    default_topk = post(server, {"queries": ["builds lends grows"]}).json()  # six documents match
    assert len(default_topk["result"][0]) == 3  # the server's default topk, as in the reference


BAD_REQUESTS = {
    "too many queries": ({"queries": ["volcano"] * 257, "topk": 3}, 413, "queries"),
    "huge query": ({"queries": ["volcano " * 300], "topk": 3}, 413, "queries[0]"),
    "topk zero": ({"queries": ["volcano"], "topk": 0}, 422, "topk"),
    "topk too large": ({"queries": ["volcano"], "topk": 10000}, 422, "topk"),
    "topk not a number": ({"queries": ["volcano"], "topk": "many"}, 422, "topk"),
    "missing queries": ({"topk": 3}, 422, "queries"),
    "queries not a list": ({"queries": "volcano", "topk": 3}, 422, "queries"),
    "query not a string": ({"queries": ["volcano", 7], "topk": 3}, 422, "queries[1]"),
    "body not an object": ([1, 2, 3], 422, "body"),
}


@pytest.mark.parametrize("case", BAD_REQUESTS)
def test_bad_request_gets_4xx_naming_the_field(server, case):
    body, status, field = BAD_REQUESTS[case]
    response = post(server, body)
    assert response.status_code == status
    error = response.json()
    assert error["field"] == field and error["error"].startswith(f"{field}: ")


def test_malformed_body_and_survival(server):
    broken = requests.post(f"{server.url}/retrieve", data=b'{"queries": ["a"', headers={"content-type": "application/json"}, timeout=10)
    assert broken.status_code == 400 and "not valid JSON" in broken.json()["error"]
    empty = requests.post(f"{server.url}/retrieve", timeout=10)
    assert empty.status_code == 422 and empty.json()["field"] == "body"
    huge = requests.post(f"{server.url}/retrieve", data=b" " * (9 << 20), headers={"content-type": "application/json"}, timeout=10)
    assert huge.status_code == 413 and "bytes exceeds" in huge.json()["error"]
    # After every bad request above and in the parametrized test, a good one still works.
    assert server.alive
    ok = post(server, {"queries": ["Corvin suspension bridge"], "topk": 1, "return_scores": True})
    assert ok.status_code == 200 and ok.json()["result"][0][0]["document"]["contents"].startswith('"Corvin Bridge"')


def test_http_retriever_matches_the_local_index(server, module_corpus_path):
    local = build_or_load_index(module_corpus_path, "bm25")
    remote = HttpRetriever(server.url, timeout=5, retries=0)
    queries = ["Ysolde jazz trio", "wine oak barrels", "nothing matches zzzq"]
    got = remote.search(queries, topk=3)
    want = local.search(queries, topk=3)
    assert [[h.document for h in hits] for hits in got] == [[h.document for h in hits] for hits in want]
    assert [h.score for hits in got for h in hits] == pytest.approx([h.score for hits in want for h in hits])
    assert got[2] == []


def count_posts(retriever):
    """Counts real requests sent by the client's session."""
    calls = []
    send = retriever.session.post

    def counting_post(*args, **kwargs):
        calls.append(1)
        return send(*args, **kwargs)

    retriever.session.post = counting_post
    return calls


def test_http_retriever_raises_at_once_on_4xx(server):
    remote = HttpRetriever(server.url, timeout=5, retries=3, backoff=0.01)
    calls = count_posts(remote)
    with pytest.raises(RetrievalError, match="HTTP 413.*limit of 256"):
        remote.search(["volcano"] * 300, topk=3)
    assert len(calls) == 1


def test_http_retriever_retries_then_raises_when_nothing_listens():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        remote = HttpRetriever(f"http://127.0.0.1:{sock.getsockname()[1]}", timeout=0.5, retries=2, backoff=0.01)
        calls = count_posts(remote)
        with pytest.raises(RetrievalError, match="did not answer after 3 attempts.*ConnectionError"):
            remote.search(["volcano"], topk=3)
    assert len(calls) == 3


def test_http_retriever_times_out_on_a_silent_server():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)  # accepts connections into the backlog, never answers
        remote = HttpRetriever(f"http://127.0.0.1:{sock.getsockname()[1]}", timeout=0.2, retries=1, backoff=0.01)
        with pytest.raises(RetrievalError, match="2 attempts.*(Timeout|timed out)"):
            remote.search(["volcano"], topk=3)


class FlakyHandler(BaseHTTPRequestHandler):
    """Answers 503 twice, then a valid Search-R1 reply in the reference's BM25 shape
    (documents with title/text/contents and no id)."""

    failures_left = 2

    def do_POST(self):
        length = int(self.headers["content-length"])
        body = json.loads(self.rfile.read(length))
        if FlakyHandler.failures_left > 0:
            FlakyHandler.failures_left -= 1
            self._reply(503, {"error": "warming up"})
            return
        doc = {"title": "Paris", "text": "Capital of France.", "contents": '"Paris"\nCapital of France.'}
        self._reply(200, {"result": [[{"document": doc, "score": 7.5}] for _ in body["queries"]]})

    def _reply(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_http_retriever_recovers_from_5xx_and_reads_the_reference_shape():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FlakyHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        remote = HttpRetriever(f"http://127.0.0.1:{httpd.server_address[1]}/", timeout=5, retries=3, backoff=0.01)
        calls = count_posts(remote)
        (hits,) = remote.search(["capital of france"], topk=1)
        assert len(calls) == 3
        assert hits[0].document.title == "Paris" and hits[0].document.text == "Capital of France." and hits[0].score == 7.5

        FlakyHandler.failures_left = 10
        with pytest.raises(RetrievalError, match="4 attempts.*HTTP 503: warming up"):
            remote.search(["capital of france"], topk=1)
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_start_server_process_reports_a_dead_server(tmp_path):
    with pytest.raises(RuntimeError, match="(?s)exited with code 1.*missing.jsonl does not exist"):
        start_server_process(tmp_path / "missing.jsonl", "bm25", port=0, timeout=60)


def test_start_server_process_times_out_and_stops_the_child(module_corpus_path, monkeypatch):
    import envs.retrieval.server_process as server_process

    started = []
    real_popen = server_process.subprocess.Popen

    def recording_popen(*args, **kwargs):
        started.append(real_popen(*args, **kwargs))
        return started[-1]

    monkeypatch.setattr(server_process.subprocess, "Popen", recording_popen)
    with pytest.raises(TimeoutError, match="not ready after 0 s"):
        start_server_process(module_corpus_path, "bm25", port=0, timeout=0.05)
    (child,) = started
    assert child.poll() is not None  # stopped, not left running
