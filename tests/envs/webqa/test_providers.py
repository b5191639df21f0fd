"""The wire formats, on answers shaped like the real APIs' (no network)."""

import math

import pytest

from envs.webqa import PROVIDERS, ResponseFormatError, SearxngProvider, SerperProvider, make_provider
from envs.webqa.providers import ANSWER, search_endpoint

SEARXNG_ANSWER = {  # SearXNG's JSON answer (2026 releases: answers are objects, no number_of_results)
    "query": "capital of zibrynme",
    "results": [
        {"url": "https://a.example/misfend", "title": "Misfend", "content": "Misfend is the\n capital of Zibrynme.",
         "engine": "wikipedia", "engines": ["wikipedia"], "score": 2.5, "positions": [1], "category": "general"},
        {"url": None, "title": "an image result without a page", "content": "", "engine": "x", "score": 1.0},
        {"url": "https://b.example/zib", "title": "Zibrynme", "content": "A country.", "engine": "duckduckgo", "score": 1.5},
        {"url": "https://c.example/3", "title": "Third", "content": "More.", "engine": "bing", "score": 0.5},
    ],
    "answers": [{"answer": "Misfend", "url": "https://a.example/misfend", "engine": "wikidata", "template": "answer/legacy.html"}],
    "corrections": [],
    "infoboxes": [],
    "suggestions": ["zibrynme capital city"],
    "unresponsive_engines": [["google", "timeout"]],
}

SERPER_ANSWER = {
    "searchParameters": {"q": "capital of zibrynme", "type": "search", "num": 3, "engine": "google"},
    "answerBox": {"title": "Zibrynme / Capital", "answer": "Misfend", "link": "https://a.example/box"},
    "knowledgeGraph": {"title": "Zibrynme", "type": "Country", "description": "A made-up country.",
                       "descriptionLink": "https://a.example/kg", "attributes": {"Capital": "Misfend"}},
    "organic": [
        {"title": "Misfend", "link": "https://a.example/misfend", "snippet": "Misfend is the capital.", "position": 1},
        {"title": "Zibrynme", "link": "https://b.example/zib", "snippet": "A country.", "position": 2, "date": "Jan 1, 2020"},
    ],
    "credits": 1,
}


def test_registry_has_both_formats_and_rejects_unknown_names():
    assert PROVIDERS == {"searxng": SearxngProvider, "serper": SerperProvider}
    with pytest.raises(ValueError, match=r"'bing' is unknown: allowed \['searxng', 'serper'\]"):
        make_provider("bing", "http://127.0.0.1:1")


@pytest.mark.parametrize("url, endpoint", [
    ("http://127.0.0.1:8888", "http://127.0.0.1:8888/search"),
    ("http://127.0.0.1:8888/", "http://127.0.0.1:8888/search"),
    ("https://google.serper.dev/search", "https://google.serper.dev/search"),
    ("https://host/searx/", "https://host/searx/search"),
])
def test_endpoint_gets_search_path(url, endpoint):
    assert search_endpoint(url) == endpoint


@pytest.mark.parametrize("url", ["127.0.0.1:8888", "ftp://host/", "http://host/search?q=x"])
def test_bad_endpoint_is_rejected_with_the_url(url):
    with pytest.raises(ValueError, match="search url"):
        search_endpoint(url)


def test_searxng_needs_a_url_and_serper_has_a_default():
    with pytest.raises(ValueError, match="SearXNG has no public endpoint"):
        make_provider("searxng")
    assert make_provider("serper").endpoint == "https://google.serper.dev/search"


def test_searxng_call_is_a_json_get_with_options():
    provider = make_provider("searxng", "http://127.0.0.1:8888", options={"language": "en", "engines": "wikipedia"})
    call = provider.build_call("capital of zibrynme", 3)
    assert (call.method, call.url) == ("GET", "http://127.0.0.1:8888/search")
    assert call.params == {"q": "capital of zibrynme", "format": "json", "language": "en", "engines": "wikipedia"}
    assert call.json is None and call.headers == {}


def test_unknown_option_names_the_allowed_ones():
    with pytest.raises(ValueError, match=r"\['num'\] are not parameters of the SearXNG API; allowed: \['categories'"):
        make_provider("searxng", "http://h", options={"num": 5})


def test_searxng_parse_puts_answers_first_skips_url_less_results_and_keeps_k():
    results = make_provider("searxng", "http://h").parse(SEARXNG_ANSWER, 3)
    assert [r.url for r in results] == ["https://a.example/misfend", "https://a.example/misfend", "https://b.example/zib"]
    assert results[0].kind == ANSWER and results[0].snippet == "Misfend"
    assert (results[1].title, results[1].snippet, results[1].score) == ("Misfend", "Misfend is the capital of Zibrynme.", 2.5)


def test_searxng_parse_reads_old_string_answers_and_number_of_results():
    old = {**SEARXNG_ANSWER, "answers": ["Misfend"], "number_of_results": 1200}
    results = make_provider("searxng", "http://h").parse(old, 2)
    assert results[0].snippet == "Misfend" and results[0].url == "searxng:answer:0"


def test_searxng_parse_names_what_is_missing():
    provider = make_provider("searxng", "http://h")
    with pytest.raises(ResponseFormatError, match=r"no 'results' list \(top-level keys: \['error'\]\)"):
        provider.parse({"error": "search error"}, 3)
    with pytest.raises(ResponseFormatError, match=r"results\[1\] is a str, expected an object"):
        provider.parse({"results": [{"url": "u"}, "oops"]}, 3)
    with pytest.raises(ResponseFormatError, match="is a JSON list, expected an object"):
        provider.parse([], 3)


def test_serper_call_posts_q_and_num_with_the_key_header_kept_out_of_repr():
    provider = make_provider("serper", api_key="secret-abc", options={"gl": "us"})
    call = provider.build_call("capital of zibrynme", 5)
    assert (call.method, call.url) == ("POST", "https://google.serper.dev/search")
    assert call.json == {"q": "capital of zibrynme", "num": 5, "gl": "us"}
    assert call.headers == {"X-API-KEY": "secret-abc"}
    assert "secret-abc" not in repr(call) and "secret-abc" not in repr(provider)
    assert "secret-abc" not in str(provider.identity())  # nor in cache keys
    assert make_provider("serper").build_call("q", 3).headers == {}  # no key: no header


def test_serper_parse_answer_box_and_knowledge_graph_then_organic():
    results = make_provider("serper").parse(SERPER_ANSWER, 4)
    assert [r.kind for r in results] == ["answer", "answer", "result", "result"]
    assert results[0].snippet == "Misfend" and results[0].title == "Zibrynme / Capital"
    assert results[1].snippet == "A made-up country. Capital: Misfend."
    assert [(r.url, r.score) for r in results[2:]] == [("https://a.example/misfend", 1.0), ("https://b.example/zib", 0.5)]


def test_serper_parse_accepts_an_empty_page_and_names_a_wrong_one():
    provider = make_provider("serper")
    assert provider.parse({"searchParameters": {"q": "zzz"}, "credits": 1}, 3) == []
    with pytest.raises(ResponseFormatError, match=r"neither 'organic' nor 'searchParameters' \(top-level keys: \['message', 'statusCode'\]\)"):
        provider.parse({"message": "Not enough credits", "statusCode": 400}, 3)
    with pytest.raises(ResponseFormatError, match="'organic' is a dict, expected a list"):
        provider.parse({"organic": {}}, 3)


def test_missing_score_is_nan():
    results = make_provider("searxng", "http://h").parse({"results": [{"url": "u", "title": "t", "content": "c"}]}, 3)
    assert math.isnan(results[0].score)


def test_rejection_hints():
    assert "search.formats" in make_provider("searxng", "http://h").explain_rejection(403)
    assert "env.api_key_env" in make_provider("serper").explain_rejection(403)
    keyed = make_provider("serper", api_key="k", key_source="the environment variable MY_KEY")
    assert "MY_KEY" in keyed.explain_rejection(401)
    assert keyed.explain_rejection(404) == ""
