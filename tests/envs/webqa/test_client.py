"""The web-search client against the real local server on 127.0.0.1 (conftest.py): results in
both wire formats, a slow server, HTTP errors, malformed answers, the API key, Retry-After,
page fetching and the on-disk cache; and QAEnv on top, where a failed search is an
observation, never a crash. Faults are injected into the server, so every failure crosses a
real socket."""

import json

import pytest

from envs import QAConfig, QAEnv, Task
from envs.retrieval.base import RetrievalError
from envs.webqa import Fault, HttpTransport, WebSearchRetriever, cap_text, make_provider, make_web_retriever
from envs.webqa.transport import RateLimiter

from .conftest import API_KEY

FAST = dict(timeout_s=2.0, retries=2, backoff_s=0.0, rate_limit_per_s=None)  # no waiting between tries


def searxng(server, **kwargs):
    return make_web_retriever("searxng", server.url, **{**FAST, **kwargs})


def served_queries(server):
    return [r.query for r in server.search_requests()]


def test_searxng_results_are_hits_with_page_urls(server, entity):
    hits = searxng(server).search([entity.title], 3)[0]
    assert 1 <= len(hits) <= 3
    assert hits[0].document.id == f"{server.url}/page/{entity.id}"  # BM25's best match for its own title
    assert hits[0].document.title == entity.title
    assert hits[0].document.text == cap_text(entity.text, 160)  # the server's snippet
    assert all(h.document.id.startswith(f"{server.url}/page/") for h in hits)
    assert served_queries(server) == [entity.title]


def test_serper_sends_the_key_from_the_environment(server, entity, api_key_env):
    retriever = make_web_retriever("serper", server.url, api_key_env=api_key_env, **FAST)
    hits = retriever.search([entity.title], 2)[0]
    assert hits[0].document.title == entity.title and len(hits) == 2
    [request] = server.search_requests()
    assert (request.method, request.query, request.api_key_ok) == ("POST", entity.title, True)
    assert API_KEY not in repr(retriever)


def test_serper_with_a_wrong_key_fails_at_once_naming_the_variable(server, monkeypatch):
    monkeypatch.setenv("WRONG_KEY", "not-the-key")
    retriever = make_web_retriever("serper", server.url, api_key_env="WRONG_KEY", **FAST)
    with pytest.raises(RetrievalError, match=r"HTTP 403.*check the environment variable WRONG_KEY") as e:
        retriever.search(["anything"], 3)
    assert "not-the-key" not in str(e.value)
    assert len(server.search_requests()) == 1  # a refused key is not retried


def test_missing_key_variable_is_a_config_error(monkeypatch):
    monkeypatch.delenv("UNSET_WEBQA_KEY", raising=False)
    with pytest.raises(ValueError, match="env.api_key_env='UNSET_WEBQA_KEY'"):
        make_web_retriever("serper", "http://127.0.0.1:1", api_key_env="UNSET_WEBQA_KEY")


def test_slow_server_times_out_then_the_retry_succeeds(server, entity):
    server.inject(Fault(delay_s=3.0))
    retriever = searxng(server, timeout_s=1.0, retries=1)  # 1 s: ample for an answer on a busy machine
    hits = retriever.search([entity.title], 3)[0]
    assert hits[0].document.title == entity.title
    assert served_queries(server) == [entity.title, entity.title]
    assert retriever.stats()["requests"] == 2


def test_server_slow_on_every_try_is_an_error_naming_the_timeout(server):
    server.inject(Fault(delay_s=3.0), Fault(delay_s=3.0))
    with pytest.raises(RetrievalError, match=r"did not answer after 2 attempts; last error: no answer within the 0.3 s timeout"):
        searxng(server, timeout_s=0.3, retries=1).search(["Zympir"], 3)


def test_a_500_is_retried(server, entity):
    server.inject(Fault(status=500))
    hits = searxng(server).search([entity.title], 3)[0]
    assert hits and len(server.search_requests()) == 2


def test_persistent_500_is_an_error_with_the_status(server):
    server.inject(*[Fault(status=500)] * 3)
    with pytest.raises(RetrievalError, match=r"SearXNG at .*/search did not answer after 3 attempts; last error: HTTP 500"):
        searxng(server).search(["Zympir"], 3)
    assert len(server.search_requests()) == 3


def test_malformed_json_is_an_error_and_not_retried(server):
    server.inject(Fault(body='{"results": [{"url": '))
    with pytest.raises(RetrievalError, match=r"answered HTTP 200 with a body that is not JSON"):
        searxng(server).search(["Zympir"], 3)
    assert len(server.search_requests()) == 1


def test_json_of_the_wrong_shape_names_what_is_missing(server):
    server.inject(Fault(body='{"error": "engine down"}'))
    with pytest.raises(RetrievalError, match=r"unexpected format: SearXNG answer has no 'results' list"):
        searxng(server).search(["Zympir"], 3)


def test_searxng_with_json_disabled_gets_the_settings_hint(server):
    server.state.searxng_json = False
    try:
        with pytest.raises(RetrievalError, match=r"HTTP 403.*search.formats"):
            searxng(server).search(["Zympir"], 3)
    finally:
        server.state.searxng_json = True


def test_retry_after_sets_the_wait_and_a_long_one_gives_up(server, entity):
    slept = []
    transport = HttpTransport(timeout_s=2.0, retries=2, backoff_s=0.0, sleep=slept.append, limiter=RateLimiter(None))
    retriever = WebSearchRetriever(make_provider("searxng", server.url), transport=transport)
    server.inject(Fault(status=429, retry_after="1"))
    assert retriever.search([entity.title], 3)[0]
    assert slept == [1.0]
    server.inject(Fault(status=503, retry_after="3600"))
    with pytest.raises(RetrievalError, match=r"asked to wait 3600 s .*max_retry_after_s=60"):
        retriever.search(["Zympir"], 3)
    assert len(server.search_requests()) == 3  # 429, the retry, one 503


def test_repeat_is_answered_from_the_cache_in_any_process(server, entity, tmp_path):
    first = searxng(server, cache_dir=tmp_path).search([entity.title], 3)
    again = searxng(server, cache_dir=tmp_path)  # a fresh client on the same folder, as another process
    assert again.search([f"  {entity.title} "], 3) == first  # whitespace does not change the key
    assert len(server.search_requests()) == 1  # the server never saw the repeat
    assert again.stats()["cache_hits"] == 1 and again.stats()["requests"] == 0
    searxng(server, cache_dir=tmp_path).search([entity.title], 2)  # another k is another key
    assert len(server.search_requests()) == 2


def test_a_cached_entry_of_the_wrong_shape_is_searched_again(server, entity, tmp_path):
    retriever = searxng(server, cache_dir=tmp_path)
    first = retriever.search([entity.title], 3)
    key = [*retriever.provider.identity(), entity.title, 3]
    retriever.cache.put("search", key, [{"url": "u"}])  # no title, snippet or score
    assert retriever.search([entity.title], 3) == first
    assert len(server.search_requests()) == 2
    assert retriever.cache.get("search", key)[0]["title"] == entity.title  # rewritten


def test_failures_are_not_cached(server, entity, tmp_path):
    server.inject(Fault(body="not json"))
    with pytest.raises(RetrievalError):
        searxng(server, cache_dir=tmp_path).search([entity.title], 3)
    assert searxng(server, cache_dir=tmp_path).search([entity.title], 3)[0]
    assert len(server.search_requests()) == 2


def test_fetched_pages_replace_snippets_stripped_and_capped(server, entity, tmp_path):
    retriever = searxng(server, fetch_pages=True, page_chars=200, cache_dir=tmp_path)
    hits = retriever.search([entity.title], 2)[0]
    text = hits[0].document.text
    assert len(text) <= 200 and entity.text[:40] in text
    assert "<" not in text and "analytics" not in text and "Home" not in text  # markup, script and nav are gone
    pages = [r.path for r in server.requests if r.path.startswith("/page/")]
    assert pages == [f"/page/{entity.id}", hits[1].document.id.split(server.url)[1]]
    searxng(server, fetch_pages=True, page_chars=200, cache_dir=tmp_path).search([entity.title], 2)
    assert [r.path for r in server.requests if r.path.startswith("/page/")] == pages  # pages came from the cache


def test_a_page_that_fails_keeps_its_snippet(server):
    dead = {"url": f"{server.url}/page/no-such-doc", "title": "Gone", "content": "the snippet", "score": 1.0}
    server.inject(Fault(body=json.dumps({"query": "gone", "results": [dead]})))
    retriever = searxng(server, fetch_pages=True)
    [hit] = retriever.search(["gone"], 3)[0]
    assert (hit.document.id, hit.document.text) == (dead["url"], "the snippet")  # the page answered 404
    assert retriever.stats()["page_fallbacks"] == 1


# QAEnv with the web retriever: the protocol and the failures as the agent sees them.

def qa_env(server, **kwargs):
    env = QAEnv(searxng(server, **kwargs), QAConfig(max_turns=4, topk=2))
    env.reset(options={"task": Task("t", ("Which river flows through Zympir?",), (("Gaespol River",),))})
    return env


def test_qa_env_search_shows_web_results(server, entity):
    env = qa_env(server)
    obs, reward, terminated, truncated, info = env.step(f"<think>none yet</think><search>{entity.title}</search>")
    assert obs.startswith("<information>You have 3 turns left.") and f"Doc 1(Title: {entity.title})" in obs
    assert info["doc_ids"][0] == f"{server.url}/page/{entity.id}" and "search_error" not in info
    assert (reward, terminated, truncated) == (0.0, False, False)


@pytest.mark.parametrize("fault, error", [
    (Fault(status=500), "HTTP 500"),
    (Fault(body="<html>oops</html>"), "not JSON"),
    (Fault(delay_s=3.0), "timeout"),
])
def test_qa_env_turns_a_failed_search_into_an_observation(server, entity, fault, error):
    env = qa_env(server, timeout_s=1.0, retries=0)
    server.inject(fault)
    obs, reward, terminated, truncated, info = env.step("<think>none yet</think><search>Zympir</search>")
    assert "The search failed" in obs and error in info["search_error"]
    assert (reward, terminated, truncated) == (0.0, False, False)
    obs, *_ = env.step(f"<think>retry</think><search>{entity.title}</search>")  # the episode goes on
    assert f"Doc 1(Title: {entity.title})" in obs
