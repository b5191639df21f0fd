"""Client of a Search-R1-compatible retrieval server (ours, envs/retrieval/server.py, or the
reference's).

    retriever = HttpRetriever("http://127.0.0.1:8000", timeout=10, retries=3)
    hits = retriever.search(["capital of france"], topk=3)

A connection error, a timeout, a 5xx or a 429 is retried with exponential backoff (`backoff`,
then twice that, ...); after the last try, or at once on another 4xx (a bad request does not get
better by repeating it) or an unreadable answer, the search raises `RetrievalError` with
the server's message. Departure from the reference client (a bare `requests.post` with
no timeout or retry, which hangs or crashes a rollout when the server hiccups).

The in-process alternative is the index itself (`build_or_load_index(...)`); the shared
one across Ray workers is `ActorRetriever` (envs/retrieval/actor.py).
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Sequence

import requests

from .base import RetrievalError, check_topk
from .corpus import Document, Hit

log = logging.getLogger(__name__)


class HttpRetriever:
    """Implements `Retriever` over HTTP. One instance per thread (it keeps a connection pool)."""

    def __init__(self, url: str, timeout: float = 10.0, retries: int = 3, backoff: float = 0.5):
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"retriever url {url!r} must start with http:// or https:// (e.g. http://127.0.0.1:8000)")
        if timeout <= 0 or retries < 0 or backoff < 0:
            raise ValueError(f"need timeout > 0, retries >= 0, backoff >= 0; got {timeout=}, {retries=}, {backoff=}")
        url = url.rstrip("/")
        self.url = url if url.endswith("/retrieve") else f"{url}/retrieve"
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.session = requests.Session()

    def search(self, queries: Sequence[str], topk: int) -> list[list[Hit]]:
        topk = check_topk(topk)
        queries = list(queries)
        if not queries:
            return []
        payload = {"queries": queries, "topk": topk, "return_scores": True}
        failure = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                response = self.session.post(self.url, json=payload, timeout=self.timeout)
            except requests.RequestException as e:  # refused, reset, timed out: worth another try
                failure = f"{type(e).__name__}: {e}"
                log.debug("retriever %s attempt %d failed: %s", self.url, attempt + 1, failure)
                continue
            if response.status_code >= 500 or response.status_code == 429:  # overloaded: wait and retry
                failure = f"HTTP {response.status_code}: {_server_message(response)}"
                continue
            if response.status_code >= 400:
                raise RetrievalError(f"retriever {self.url} rejected the request (HTTP {response.status_code}): {_server_message(response)}")
            return _parse_response(response, len(queries), self.url)
        raise RetrievalError(f"retriever {self.url} did not answer after {self.retries + 1} attempts; last error: {failure}")

    def close(self) -> None:
        self.session.close()

    def __repr__(self) -> str:
        return f"HttpRetriever({self.url!r}, timeout={self.timeout}, retries={self.retries})"


def _server_message(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500]
    if isinstance(body, dict):
        return str(body.get("error") or body.get("detail") or body)[:500]
    return str(body)[:500]


def _parse_response(response: requests.Response, num_queries: int, url: str) -> list[list[Hit]]:
    try:
        result = response.json()["result"]
        if not isinstance(result, list) or len(result) != num_queries:
            raise ValueError(f"expected {num_queries} result lists, got {type(result).__name__} of {len(result) if isinstance(result, list) else '?'}")
        return [[_parse_hit(item) for item in hits] for hits in result]
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise RetrievalError(f"retriever {url} answered in an unexpected format ({e}): {response.text[:300]!r}") from None


def _parse_hit(item: dict[str, Any]) -> Hit:
    """{"document": {...}, "score": s} or, without scores, the bare document. Besides our
    {"id", "contents"}, the reference's BM25 server sends {"title", "text", "contents"}."""
    document, score = (item["document"], item.get("score", math.nan)) if "document" in item else (item, math.nan)
    contents = document.get("contents")
    if contents is None:
        contents = Document.make("", document["title"], document["text"]).contents
    return Hit(Document(id=str(document.get("id", "")), contents=str(contents)), float(score))
