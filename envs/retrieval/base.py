"""The contract every retrieval backend meets: a batch of queries in, ranked hits out.

    hits = retriever.search(["capital of france", "who wrote hamlet"], topk=3)
    hits[0][0].document.contents, hits[0][0].score     # best hit of the first query

One list per query, in query order, best hit first, at most `topk` hits (fewer when the
corpus is smaller or nothing matches). Backends: the in-process indexes (`BM25Index`,
`DenseIndex`, `HybridIndex`), `HttpRetriever` (a Search-R1-compatible server) and
`ActorRetriever` (one index shared through a Ray actor).
"""

from __future__ import annotations

import operator
from typing import Protocol, Sequence, runtime_checkable

from .corpus import Hit


class RetrievalError(Exception):
    """A search could not be answered (server unreachable after retries, bad response, dead
    actor). Environments turn it into an observation instead of ending the episode."""


@runtime_checkable
class Retriever(Protocol):
    def search(self, queries: Sequence[str], topk: int) -> list[list[Hit]]:
        """Top-`topk` hits per query, best first."""
        ...


def check_topk(topk: int) -> int:
    """Reject a non-positive or non-integer `topk` (the indexes' shared guard)."""
    try:
        k = operator.index(topk)  # ints and numpy ints; floats and strings fail
    except TypeError:
        k = 0
    if isinstance(topk, bool) or k < 1:
        raise ValueError(f"topk={topk!r}: must be an integer >= 1")
    return k
