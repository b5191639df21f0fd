"""BM25, dense and hybrid indexes over a real corpus file: the right document comes first,
and the edges (topk beyond the corpus, queries with no known word, bad topk) behave."""

import math

import pytest

from envs.retrieval import BM25Index, DenseIndex, HybridIndex, Retriever, build_or_load_index
from envs.retrieval.corpus import Document, Hit
from envs.retrieval.hybrid import RRF_K, reciprocal_rank_fusion

from .conftest import FACTS


@pytest.fixture(scope="module")
def bm25(module_corpus_path):
    return build_or_load_index(module_corpus_path, "bm25")


@pytest.fixture(scope="module")
def hybrid(module_corpus_path):
    """Builds the BM25 and the dense index (loads MiniLM once for the module)."""
    return build_or_load_index(module_corpus_path, "hybrid")


def titles(hits: list[Hit]) -> list[str]:
    return [h.document.title for h in hits]


def test_bm25_keyword_query_finds_the_document_first(bm25):
    assert isinstance(bm25, BM25Index) and isinstance(bm25, Retriever)
    results = bm25.search(["When did Mount Tesskar erupt?", "sourdough croissants", "Hadrik Solm chess"], topk=3)
    assert [titles(r)[0] for r in results] == ["Mount Tesskar", "Brindle Bakery", "Hadrik Solm"]
    for hits in results:
        assert all(isinstance(h.score, float) for h in hits)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert results[0][0].document.text == FACTS["Mount Tesskar"]


def test_bm25_returns_only_matching_documents_and_caps_at_corpus_size(bm25):
    many = bm25.search(["lends"], topk=1000)[0]  # the word occurs in exactly two facts
    assert sorted(titles(many)) == ["Gilder Bank", "Harrowgate Library"]
    assert all(h.score > 0 for h in many)
    assert bm25.search(["the of and", "zzzqqq", ""], topk=3) == [[], [], []]  # stopwords, unknown, empty
    assert len(bm25.search(["volcano"] * 5, topk=2)) == 5
    assert bm25.search([], topk=3) == []


@pytest.mark.parametrize("topk", [0, -1, 2.5, "3", True])
def test_bad_topk_is_a_clear_error(bm25, topk):
    with pytest.raises(ValueError, match="topk"):
        bm25.search(["volcano"], topk=topk)


def test_dense_index_finds_a_paraphrase_that_bm25_cannot(hybrid, bm25):
    dense = hybrid.dense
    assert isinstance(dense, DenseIndex)
    queries = ["craftsman of fiddles", "physician specialising in cardiac operations", "somewhere to go fishing"]
    results = dense.search(queries, topk=3)
    assert [titles(r)[0] for r in results] == ["Orla Fenwick", "Imra Voss", "Lake Verrin"]
    for hits in results:
        assert all(-1.0 - 1e-5 <= h.score <= 1.0 + 1e-5 for h in hits)  # cosine of unit vectors
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert bm25.search(queries, topk=3) == [[], [], []]  # no shared word: lexical search finds nothing
    assert len(dense.search(["anything"], topk=1000)[0]) == len(FACTS)  # capped at the corpus


def test_hybrid_fuses_lexical_and_semantic_matches(hybrid):
    assert isinstance(hybrid, HybridIndex) and len(hybrid.documents) == len(FACTS)
    results = hybrid.search(["Mount Tesskar erupted", "craftsman of fiddles"], topk=4)
    assert [titles(r)[0] for r in results] == ["Mount Tesskar", "Orla Fenwick"]
    assert results[0][0].score == pytest.approx(2 / (RRF_K + 1))  # first in both rankings
    assert results[1][0].score == pytest.approx(1 / (RRF_K + 1))  # first in the dense one only
    assert all(len(r) == 4 for r in results)


def test_reciprocal_rank_fusion_worked_example():
    a, b, c = (Document.make(x, x.upper(), f"text {x}") for x in "abc")
    fused = reciprocal_rank_fusion([[Hit(a, 9.0), Hit(b, 5.0)], [Hit(b, 0.9), Hit(c, 0.8)]], topk=3, k=60)
    # b: 1/62 + 1/61 = 0.032526; a: 1/61 = 0.016393; c: 1/62 = 0.016129
    assert [h.document.id for h in fused] == ["b", "a", "c"]
    assert [h.score for h in fused] == pytest.approx([1 / 62 + 1 / 61, 1 / 61, 1 / 62])
    assert len(reciprocal_rank_fusion([[Hit(a, 1.0)], [Hit(b, 1.0)]], topk=1)) == 1
    assert not math.isnan(fused[0].score)
