"""BM25 over a corpus, with bm25s (sparse, numpy; no Java, unlike the reference's pyserini).

    index = BM25Index.build(documents)
    index.search(["Evan Morris lobbyist"], topk=3)
    index.save(folder); BM25Index.load(folder, documents)

Each document is indexed by its `contents` (title and text, as the reference indexes it),
lower-cased, split on word characters, English stopwords removed. Words are stemmed (Snowball English) only when
PyStemmer is installed; whether they were is recorded in `BM25Index.settings`, which goes
into the cache key so an index is never queried with a different tokenizer than it was
built with. Departure from the reference (pyserini/Lucene BM25, k1=0.9, b=0.4): bm25s's
Lucene variant with its defaults (k1=1.5, b=0.75). As in Lucene, a document that shares
no term with the query is not a hit, so a query of only stopwords or unknown words gets
an empty list.

Usually built through `build_or_load_index(corpus, "bm25")`, which caches it on disk.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import logging

import bm25s
import numpy as np

from .base import check_topk
from .corpus import Document, Hit

# bm25s sets its own logger to DEBUG when imported, so every index build would print a
# "Building index from IDs" line (amem builds one per note search).
logging.getLogger("bm25s").setLevel(logging.WARNING)

# Progress bars only where a build takes long enough to watch.
PROGRESS_MIN_DOCS = 10_000


def _load_stemmer():
    try:
        import Stemmer  # PyStemmer: optional, not in the lock file
    except ImportError:
        return None, "none"
    return Stemmer.Stemmer("english"), "snowball-english"


class BM25Index:
    """An in-process BM25 retriever (implements `Retriever`)."""

    def __init__(self, model: bm25s.BM25, documents: Sequence[Document]):
        num_docs = int(model.scores["num_docs"])
        if num_docs != len(documents):
            raise ValueError(f"BM25 index holds {num_docs} documents but {len(documents)} were given; rebuild the index")
        self.model = model
        self.documents = list(documents)
        self._stemmer, _ = _load_stemmer()

    @staticmethod
    def settings() -> str:
        """What decides the index contents besides the corpus (part of the cache key)."""
        _, stemmer = _load_stemmer()
        return f"bm25s-{bm25s.__version__}:lucene:stopwords=en:stemmer={stemmer}"

    @classmethod
    def build(cls, documents: Sequence[Document]) -> "BM25Index":
        if not documents:
            raise ValueError("cannot build a BM25 index over an empty corpus")
        stemmer, _ = _load_stemmer()
        progress = len(documents) >= PROGRESS_MIN_DOCS
        tokens = bm25s.tokenize(
            [d.contents for d in documents], stopwords="en", stemmer=stemmer, show_progress=progress
        )
        model = bm25s.BM25()
        model.index(tokens, show_progress=progress)
        return cls(model, documents)

    def save(self, folder: str | Path) -> None:
        self.model.save(str(folder), show_progress=False)  # index arrays only; the corpus stays in its file

    @classmethod
    def load(cls, folder: str | Path, documents: Sequence[Document]) -> "BM25Index":
        return cls(bm25s.BM25.load(str(folder), show_progress=False), documents)

    def search(self, queries: Sequence[str], topk: int) -> list[list[Hit]]:
        topk = check_topk(topk)
        if not queries:
            return []
        k = min(topk, len(self.documents))  # bm25s refuses k > corpus size
        query_tokens = bm25s.tokenize(
            list(queries), stopwords="en", stemmer=self._stemmer, return_ids=False, show_progress=False
        )
        indices, scores = self.model.retrieve(query_tokens, k=k, show_progress=False)  # (Q, k) each
        return [
            [Hit(self.documents[int(i)], float(s)) for i, s in zip(row_i, row_s) if s > 0.0]
            for row_i, row_s in zip(np.asarray(indices), np.asarray(scores))
        ]
