"""The retrieval stack: corpus format, BM25 / dense / hybrid indexes cached on disk, a
Search-R1-compatible HTTP server, and the clients that reach an index (HTTP, Ray actor,
or the index itself in-process). Every backend implements `Retriever.search`.

    index = build_or_load_index("corpus.jsonl", kind="bm25")            # in-process
    server = start_server_process("corpus.jsonl", port=0)               # HTTP, background
    retriever = HttpRetriever(server.url)
    retriever = start_retriever_actor("corpus.jsonl")                   # Ray, shared

The index, server and Ray modules are imported on first use (bm25s, faiss, FastAPI and Ray
together take seconds to import), so `import envs` stays fast.
"""

from importlib import import_module

from .base import RetrievalError, Retriever
from .client import HttpRetriever
from .corpus import Document, Hit, format_passages, read_corpus_jsonl, write_corpus_jsonl

_LAZY = {
    "INDEX_KINDS": ".index",
    "build_or_load_index": ".index",
    "BM25Index": ".bm25",
    "DenseIndex": ".dense",
    "HybridIndex": ".hybrid",
    "ServerLimits": ".server",
    "create_app": ".server",
    "serve": ".server",
    "RetrieverServer": ".server_process",
    "start_server_process": ".server_process",
    "ActorRetriever": ".actor",
    "start_retriever_actor": ".actor",
}

__all__ = [
    "Document", "Hit", "read_corpus_jsonl", "write_corpus_jsonl", "format_passages",
    "Retriever", "RetrievalError", "HttpRetriever", *_LAZY,
]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name], __name__), name)
        globals()[name] = value  # later lookups skip this hook
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
