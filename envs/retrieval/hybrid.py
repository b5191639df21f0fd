"""Hybrid retrieval: BM25 and dense rankings merged by reciprocal-rank fusion (RRF).

    index = HybridIndex(bm25_index, dense_index)
    index.search(["Evan Morris lobbyist"], topk=3)

Why RRF (Cormack, Clarke and Buettcher, SIGIR 2009): BM25 scores are unbounded and depend
on the corpus and query length, cosine scores lie in [-1, 1]; adding them needs weights
and a normalisation tuned per corpus. RRF uses ranks only, score(d) = sum over the two
lists of 1 / (k + rank(d)), with k = 60 from the paper, so it needs no tuning and a
document ranked well by either retriever surfaces. Each retriever contributes its top
`max(topk, MIN_CANDIDATES)` candidates. Hit scores are the fused RRF scores.

Written by hand (about ten lines): no installed library fuses ranked lists.
"""

from __future__ import annotations

from typing import Sequence

from .base import check_topk
from .bm25 import BM25Index
from .corpus import Document, Hit
from .dense import DenseIndex

RRF_K = 60
MIN_CANDIDATES = 20  # depth each retriever contributes; fusion needs more than the final topk


def reciprocal_rank_fusion(rankings: Sequence[Sequence[Hit]], topk: int, k: int = RRF_K) -> list[Hit]:
    """Fuse ranked hit lists; a document is matched by value (id and contents), so corpora
    with repeated ids still fuse correctly. Ties keep first-seen order."""
    fused: dict[Document, float] = {}
    for ranking in rankings:
        for rank, hit in enumerate(ranking, 1):
            fused[hit.document] = fused.get(hit.document, 0.0) + 1.0 / (k + rank)
    best = sorted(fused, key=fused.__getitem__, reverse=True)[:topk]  # stable: ties keep order
    return [Hit(document, fused[document]) for document in best]


class HybridIndex:
    """BM25 + dense with RRF (implements `Retriever`)."""

    def __init__(self, sparse: BM25Index, dense: DenseIndex):
        self.sparse = sparse
        self.dense = dense

    @property
    def documents(self) -> list[Document]:
        return self.sparse.documents

    def search(self, queries: Sequence[str], topk: int) -> list[list[Hit]]:
        topk = check_topk(topk)
        depth = max(topk, MIN_CANDIDATES)
        sparse_hits = self.sparse.search(queries, depth)
        dense_hits = self.dense.search(queries, depth)
        return [reciprocal_rank_fusion([s, d], topk) for s, d in zip(sparse_hits, dense_hits)]
