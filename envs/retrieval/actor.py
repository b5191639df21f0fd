"""One retrieval index in a Ray actor, shared by every env runner of a job.

    retriever = start_retriever_actor("corpus.jsonl", kind="bm25")   # after ray.init()
    hits = retriever.search(["capital of france"], topk=3)            # from any worker

`start_retriever_actor` creates the named actor, or returns the running one of that name
(`get_if_exists`), so each env runner may call it and all share one index in memory. It
refuses an existing actor that serves another corpus or kind, instead of silently
answering from the wrong index. `ActorRetriever` is a small picklable handle: ship it to
workers as is.

The corpus path (and the index cache) must be readable where the actor runs: on a
multi-node cluster, a shared file system. The actor holds no CPU (`num_cpus=0`) by
default: it idles between searches, and reserving a core would starve env runners on
small machines. It answers one call at a time, in arrival order. Ray restarts it if its
process dies (it reloads the index from the cache) and retries the interrupted search.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import ray

from .base import RetrievalError, check_topk
from .corpus import Hit
from .dense import DEFAULT_DENSE_MODEL, FaissOptions, serve_queries_single_threaded
from .index import build_or_load_index

DEFAULT_ACTOR_NAME = "mem1-retriever"


def _identity(corpus: str, kind: str, model: str, faiss_options: FaissOptions) -> dict[str, str | None]:
    """What a running actor must match to be reused (the resolved path, not a content hash:
    hashing a wiki-size corpus on every call would cost a minute)."""
    dense = kind != "bm25"
    return {"corpus": corpus, "kind": kind, "model": model if dense else None, "faiss": repr(faiss_options) if dense else None}


class RetrieverActor:
    """The actor's body: builds or loads the index once, then answers searches."""

    def __init__(self, corpus: str, kind: str, cache_dir: str | None, model: str, faiss_options: FaissOptions = FaissOptions()):
        self.index = build_or_load_index(corpus, kind, cache_dir, model=model, faiss_options=faiss_options)
        if kind != "bm25":
            serve_queries_single_threaded()
        self.identity = _identity(corpus, kind, model, faiss_options)

    def describe(self) -> dict[str, str]:
        return self.identity

    def search(self, queries: list[str], topk: int) -> list[list[Hit]]:
        return self.index.search(queries, topk)


class ActorRetriever:
    """Implements `Retriever` by calling a `RetrieverActor`. `timeout` (seconds) bounds a
    search; None waits as long as the actor takes."""

    def __init__(self, handle: "ray.actor.ActorHandle", timeout: float | None = 60.0):
        self.handle = handle
        self.timeout = timeout

    def search(self, queries: Sequence[str], topk: int) -> list[list[Hit]]:
        topk = check_topk(topk)  # here, so a bad topk is a ValueError and not a remote failure
        try:
            return ray.get(self.handle.search.remote(list(queries), topk), timeout=self.timeout)
        except ray.exceptions.RayError as e:  # dead actor, timeout, or the search raised
            raise RetrievalError(f"retriever actor did not answer: {type(e).__name__}: {e}") from e


def start_retriever_actor(
    corpus: str | Path,
    kind: str = "bm25",
    *,
    name: str = DEFAULT_ACTOR_NAME,
    namespace: str | None = None,
    cache_dir: str | Path | None = None,
    model: str = DEFAULT_DENSE_MODEL,
    faiss_options: FaissOptions = FaissOptions(),
    detached: bool = False,
    num_cpus: float = 0,
    timeout: float | None = 60.0,
) -> ActorRetriever:
    """The named retriever actor (created, or the running one), ready to search. A detached
    actor outlives this job (give it a `namespace` so later jobs find it; stop it with
    `ray.kill(ray.get_actor(name, namespace))`); otherwise it
    dies when the last handle to it is dropped, so the creator keeps the returned retriever
    for as long as workers use it. `timeout` is the per-search limit of the handle.
    `model` and `faiss_options` shape a dense or hybrid index (envs/retrieval/dense.py)."""
    corpus = str(Path(corpus).resolve())
    handle = (
        ray.remote(RetrieverActor)
        .options(
            name=name,
            namespace=namespace,
            get_if_exists=True,
            lifetime="detached" if detached else None,
            num_cpus=num_cpus,
            max_restarts=3,
            max_task_retries=2,  # searches are read-only, so a retry is safe
        )
        .remote(corpus, kind, None if cache_dir is None else str(cache_dir), model, faiss_options)
    )
    try:
        identity = ray.get(handle.describe.remote())  # waits for the index; surfaces build errors
    except ray.exceptions.RayError as e:
        raise RuntimeError(f"retriever actor {name!r} failed to start over {corpus} ({kind}): {e}") from e
    wanted = _identity(corpus, kind, model, faiss_options)
    if identity != wanted:
        raise ValueError(
            f"a retriever actor named {name!r} already serves {identity}, not {wanted}; "
            "pass another name=, or stop the running actor first"
        )
    return ActorRetriever(handle, timeout=timeout)
