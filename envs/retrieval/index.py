"""Build a retrieval index once, cache it on disk, load it on later use.

    index = build_or_load_index("corpus.jsonl", kind="bm25")      # or "dense", "hybrid"
    hits = index.search(["who founded the Acme guild"], topk=3)

The cache lives beside the corpus, in `<corpus>.index/<kind>-<key>/`, or under
`cache_dir`. The key hashes the corpus *contents* (SHA-256, streamed; size and mtime
would miss an edit that keeps both) together with the kind and what shapes the index (the
tokenizer settings for BM25, the encoder and the faiss factory string (with its training
sample size when it trains) for dense), so a changed corpus, encoder or faiss index builds a
new index instead of loading a stale one. The faiss search-time knob (`search_k`) is applied
at load, so changing it needs no rebuild. A hybrid index is the BM25 and
dense indexes, each cached under its own key, fused at query time.

Writes are atomic: an index is built into a temporary sibling folder, its manifest
written last, and the folder renamed into place. A crashed build leaves only a temporary
folder (removed by the next build on that host once its process is gone), never a half
index that loads. Two processes building the same index at once both build; the first
rename wins and the other keeps its own (identical) copy in memory.

Indexes store only their own arrays; documents are read from the corpus file at load
(the content hash guarantees they are the ones indexed), so a corpus is never copied.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

from .base import Retriever
from .bm25 import BM25Index
from .corpus import Document, read_corpus_jsonl
from .dense import DEFAULT_DENSE_MODEL, DenseIndex, FaissOptions
from .hybrid import HybridIndex

log = logging.getLogger(__name__)

INDEX_KINDS = ("bm25", "dense", "hybrid")
MANIFEST_FILE = "manifest.json"  # written last: its presence marks a complete index
CACHE_FORMAT = 1  # bump when the on-disk layout changes, so old caches are not loaded
_TEMP_MARK = ".tmp-"


def corpus_digest(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """SHA-256 of the file's bytes, read in 1 MiB chunks (constant memory at any size)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def default_cache_root(corpus_path: str | Path) -> Path:
    return Path(f"{corpus_path}.index")


def build_or_load_index(
    corpus_path: str | Path,
    kind: str = "bm25",
    cache_dir: str | Path | None = None,
    *,
    model: str = DEFAULT_DENSE_MODEL,
    faiss_options: FaissOptions = FaissOptions(),
) -> Retriever:
    """The `kind` index over the corpus JSONL, loaded from the cache or built and cached.
    `model` is the sentence-transformers encoder of the dense part (dense and hybrid), and
    `faiss_options` its faiss index (factory string, training sample, search-time knob)."""
    if kind not in INDEX_KINDS:
        raise ValueError(f"index kind {kind!r} is unknown: allowed {', '.join(INDEX_KINDS)}")
    corpus_path = Path(corpus_path)
    if not corpus_path.is_file():
        raise FileNotFoundError(f"corpus file {corpus_path} does not exist (expected Search-R1 JSONL: one {{'id', 'contents'}} per line)")
    root = Path(cache_dir) if cache_dir is not None else default_cache_root(corpus_path)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(f"cannot create the index cache folder {root} ({e}); pass cache_dir= a writable folder") from None

    digest = corpus_digest(corpus_path)
    documents = list(read_corpus_jsonl(corpus_path))
    if not documents:
        raise ValueError(f"corpus file {corpus_path} holds no documents")
    if kind == "hybrid":
        sparse = _cached("bm25", documents, digest, corpus_path, root, model, faiss_options)
        return HybridIndex(sparse, _cached("dense", documents, digest, corpus_path, root, model, faiss_options))
    return _cached(kind, documents, digest, corpus_path, root, model, faiss_options)


def _settings(kind: str, model: str, faiss_options: FaissOptions) -> str:
    return BM25Index.settings() if kind == "bm25" else DenseIndex.settings(model, faiss_options)


def cache_folder(root: Path, kind: str, digest: str, model: str = DEFAULT_DENSE_MODEL, faiss_options: FaissOptions = FaissOptions()) -> Path:
    """Where the `kind` index of the corpus with this digest lives under `root`."""
    settings = _settings(kind, model, faiss_options)
    key = hashlib.sha256(f"{CACHE_FORMAT}|{kind}|{settings}|{digest}".encode()).hexdigest()[:16]
    return root / f"{kind}-{key}"


def _cached(kind: str, documents: list[Document], digest: str, corpus_path: Path, root: Path, model: str, faiss_options: FaissOptions):
    folder = cache_folder(root, kind, digest, model, faiss_options)
    if (folder / MANIFEST_FILE).is_file():
        try:
            index = BM25Index.load(folder, documents) if kind == "bm25" else DenseIndex.load(folder, documents, model, faiss_options)
        except Exception as e:  # a complete but unreadable index: say which and how to recover
            raise RuntimeError(f"cached {kind} index {folder} cannot be loaded ({e}); delete that folder to rebuild it") from e
        log.info("loaded %s index of %s from %s", kind, corpus_path, folder)
        return index

    _remove_stale_temps(root, folder.name)
    start = time.perf_counter()
    index = BM25Index.build(documents) if kind == "bm25" else DenseIndex.build(documents, model, faiss_options)
    seconds = time.perf_counter() - start
    manifest = {
        "format": CACHE_FORMAT,
        "kind": kind,
        "settings": _settings(kind, model, faiss_options),
        "corpus": str(corpus_path.resolve()),
        "corpus_sha256": digest,
        "num_docs": len(documents),
        "build_seconds": round(seconds, 3),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    _save_atomically(index, folder, manifest)
    log.info("built %s index of %s (%d documents) in %.1f s -> %s", kind, corpus_path, len(documents), seconds, folder)
    return index


def _save_atomically(index, folder: Path, manifest: dict) -> None:
    owner = f"{os.getpid()}@{socket.gethostname()}"  # whose build this is, for _remove_stale_temps
    temp = Path(tempfile.mkdtemp(prefix=f"{folder.name}{_TEMP_MARK}{owner}-", dir=folder.parent))
    try:
        index.save(temp)
        with open(temp / MANIFEST_FILE, "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.rename(temp, folder)  # atomic on one file system; fails if the target exists
        except OSError as e:
            if not (folder / MANIFEST_FILE).is_file():
                raise OSError(f"cannot move the built index into {folder} ({e}); if that folder exists without {MANIFEST_FILE}, delete it") from e
            log.info("another process cached %s first; keeping its copy", folder)
    finally:
        if temp.exists():
            shutil.rmtree(temp, ignore_errors=True)


def _remove_stale_temps(root: Path, name: str) -> None:
    """Delete temporary folders of crashed builds of this index: those made on this host
    by a process that is gone (on a shared file system, other hosts' builds are left alone)."""
    host = socket.gethostname()
    for temp in root.glob(f"{name}{_TEMP_MARK}*"):
        owner = temp.name[len(name) + len(_TEMP_MARK) :].rsplit("-", 1)[0]  # drop mkdtemp's suffix
        pid_text, _, owner_host = owner.partition("@")
        if owner_host == host and pid_text.isdigit() and not _process_alive(int(pid_text)):
            shutil.rmtree(temp, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True
