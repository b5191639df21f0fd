"""The on-disk result cache and the HTML-to-text helpers (real files, no network)."""

import json

import pytest

from envs.webqa import ResultCache, cap_text, html_to_text
from envs.webqa.pages import page_text
from envs.webqa.server import render_page
from envs.retrieval.corpus import Document

KEY = ["searxng", "http://h/search", [], "capital of zibrynme", 3]


def test_miss_then_hit_in_another_instance(tmp_path):
    cache = ResultCache(tmp_path / "c")
    assert cache.get("search", KEY) is None
    path = cache.put("search", KEY, [{"url": "u", "title": "t", "snippet": "s", "score": float("nan")}])
    assert path.is_file() and path.parent.parent.name == "search"
    again = ResultCache(tmp_path / "c")
    value = again.get("search", KEY)
    assert value[0]["url"] == "u" and value[0]["score"] != value[0]["score"]  # nan survives
    assert (cache.hits, cache.misses, again.hits) == (0, 1, 1)
    assert not list(path.parent.glob("*.tmp"))  # the temporary file was renamed away


def test_keys_differ_by_every_part(tmp_path):
    cache = ResultCache(tmp_path)
    cache.put("search", KEY, ["a"])
    for changed in (KEY[:-1] + [4], KEY[:3] + ["other query", 3], ["serper"] + KEY[1:]):
        assert cache.get("search", changed) is None
    assert cache.get("pages", KEY) is None  # namespaces are separate


def test_unreadable_or_foreign_entry_is_a_miss(tmp_path):
    cache = ResultCache(tmp_path)
    path = cache.put("search", KEY, ["a"])
    path.write_text("{truncated")
    assert cache.get("search", KEY) is None
    path.write_text(json.dumps({"format": 1, "key": ["something else"], "value": ["b"]}))  # a collision
    assert cache.get("search", KEY) is None
    cache.put("search", KEY, ["c"])  # a later put repairs it
    assert cache.get("search", KEY) == ["c"]


def test_unwritable_root_names_the_setting(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OSError, match="env.cache_dir"):
        ResultCache(blocker / "cache")


def test_html_to_text_keeps_words_and_drops_markup_scripts_and_chrome():
    html = render_page(Document.make("7", "Misfend & Co", "Misfend is the capital of <Zibrynme>."),
                       [Document.make("8", "Misfend & Co", "It was founded in 1256.")])
    text = html_to_text(html)
    assert text == "Misfend & Co Misfend is the capital of <Zibrynme>. It was founded in 1256."


def test_html_to_text_separates_blocks_and_survives_broken_markup():
    assert html_to_text("<div>one</div><div>two<br>three</div><p>four") == "one two three four"
    assert html_to_text("<p>caf&eacute; &lt;ok&gt;</p><style>p{}</style><script>if (a < b) {}</script>") == "café <ok>"


def test_page_text_by_content_type():
    assert page_text("text/html; charset=utf-8", "<p>hi</p>") == "hi"
    assert page_text("text/plain", "a\n  b") == "a b"
    assert page_text("application/pdf", "%PDF") is None


@pytest.mark.parametrize("limit", [20, 50, 100])
def test_cap_text_fits_the_limit_and_cuts_at_a_space(limit):
    text = "word " * 40
    capped = cap_text(text.strip(), limit)
    assert len(capped) <= limit and capped.endswith(" ...")
    assert capped[:-4].split(" ")[-1] == "word"  # no half word
    assert cap_text("short", limit) == "short"


def test_cap_text_cuts_a_giant_word():
    assert cap_text("x" * 500, 50) == "x" * 46 + " ..."
