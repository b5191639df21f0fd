"""A `Retriever` backed by a web-search API, so `QAEnv` searches the web unchanged.

    retriever = make_web_retriever("searxng", "http://127.0.0.1:8888", cache_dir="runs/webqa-cache")
    retriever = make_web_retriever("serper", api_key_env="SERPER_API_KEY", fetch_pages=True)
    hits = retriever.search(["capital of france"], topk=3)
    hits[0][0].document.id, hits[0][0].document.title     # the result's URL and title
    env = QAEnv(retriever, QAConfig(topk=3))

Each result becomes `Hit(Document.make(id=url, title, text), score)`; the text is the
result's snippet or, with `fetch_pages`, the page's text (HTML stripped, at most
`page_chars` characters; a page that fails to load, is not HTML or plain text, or has no
text falls back to the snippet). One query is one API request (the APIs take one query
each), sent through the transport (timeouts, retries, rate limit: transport.py). Page
fetches go to the result sites, not the search API: no retries and no rate limit, since a
failed page only costs the snippet.

Results are cached on disk (cache.py) under (provider, endpoint, provider options, query,
k); pages under (URL, page_chars). A repeated search is answered from disk without touching
the network or the rate limiter, in this process or any other sharing the folder.

A search that cannot be answered raises `RetrievalError` with a message naming the endpoint
and the failure; `QAEnv` turns that into an observation ("The search failed ...") and the
episode goes on. The API key is held by the provider and never logged or shown in reprs
and messages.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..retrieval.base import RetrievalError, check_topk
from ..retrieval.corpus import Document, Hit
from .cache import ResultCache
from .pages import cap_text, page_text
from .providers import ResponseFormatError, SearchProvider, WebResult, make_provider
from .transport import HttpTransport, RateLimiter

log = logging.getLogger(__name__)

PAGE_MAX_BYTES = 2 << 20  # read at most 2 MiB of a page: enough text for any page_chars, bounded memory


class WebSearchRetriever:
    """Implements `Retriever` over a `SearchProvider`. Safe to share between threads (one HTTP
    session per thread, a locked rate limiter, atomic cache writes)."""

    def __init__(
        self,
        provider: SearchProvider,
        *,
        timeout_s: float = 10.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        max_retry_after_s: float = 60.0,
        rate_limit_per_s: float | None = 5.0,
        cache_dir: str | Path | None = None,
        fetch_pages: bool = False,
        page_chars: int = 1500,
        transport: HttpTransport | None = None,
    ):
        if page_chars < 100:
            raise ValueError(f"page_chars={page_chars}: must be at least 100")
        self.provider = provider
        self.transport = transport or HttpTransport(
            timeout_s=timeout_s, retries=retries, backoff_s=backoff_s, max_retry_after_s=max_retry_after_s,
            limiter=RateLimiter(rate_limit_per_s),
        )
        self.cache = ResultCache(cache_dir) if cache_dir is not None else None
        self.fetch_pages = fetch_pages
        self.page_chars = page_chars
        self.pages_fetched = 0
        self.page_fallbacks = 0

    @property
    def url(self) -> str:
        return self.provider.endpoint

    def search(self, queries: Sequence[str], topk: int) -> list[list[Hit]]:
        k = check_topk(topk)
        return [[self._hit(r) for r in self.results(q, k)] for q in queries]

    def results(self, query: str, k: int) -> list[WebResult]:
        """The top-k results of one query, from the cache or the API."""
        query = " ".join(str(query).split())
        if not query:
            return []
        key = [*self.provider.identity(), query, k]
        results = self._cached_results(key)
        if results is None:
            payload = self.transport.fetch_json(self.provider.build_call(query, k), self.provider)
            try:
                results = self.provider.parse(payload, k)
            except ResponseFormatError as e:
                raise RetrievalError(f"{self.provider.label} at {self.provider.endpoint} answered in an unexpected format: {e}") from None
            if self.cache is not None:  # the snippets: pages are cached on their own, so fetch_pages can change
                self.cache.put("search", key, [r.as_dict() for r in results])
        if self.fetch_pages:
            results = [self._with_page(r) for r in results]
        return results

    def _cached_results(self, key: list[Any]) -> list[WebResult] | None:
        """The cached results for `key`, or None on a miss; an entry of the wrong shape (edited
        by hand, written by other code) is a miss, so the search is sent again and rewrites it."""
        cached = self.cache.get("search", key) if self.cache is not None else None
        if cached is None:
            return None
        try:
            return [WebResult.from_dict(d) for d in cached]
        except (KeyError, TypeError, ValueError) as e:
            log.warning("ignoring a malformed cached result for %r (%s: %s)", key[-2], type(e).__name__, e)
            return None

    def _with_page(self, result: WebResult) -> WebResult:
        """`result` with its page text as the snippet; unchanged if the page gives no text."""
        if result.kind != "result" or not result.url.startswith(("http://", "https://")):
            return result
        text = self._page(result.url)
        if not text:
            self.page_fallbacks += 1
            return result
        return WebResult(result.url, result.title, text, result.score, result.kind)

    def _page(self, url: str) -> str | None:
        key = [url, self.page_chars]
        if self.cache is not None:
            cached = self.cache.get("pages", key)
            if cached is not None:
                return cached
        fetched = self.transport.fetch_text(url, max_bytes=PAGE_MAX_BYTES)
        self.pages_fetched += 1
        text = page_text(*fetched) if fetched is not None else None
        if not text:
            return None  # not cached: a page that failed now may load next time
        text = cap_text(text, self.page_chars)
        if self.cache is not None:
            self.cache.put("pages", key, text)
        return text

    @staticmethod
    def _hit(result: WebResult) -> Hit:
        return Hit(Document.make(id=result.url, title=result.title, text=result.snippet), result.score)

    def stats(self) -> dict[str, Any]:
        return {
            "requests": self.transport.attempts,
            "cache_hits": self.cache.hits if self.cache else 0,
            "cache_misses": self.cache.misses if self.cache else 0,
            "pages_fetched": self.pages_fetched,
            "page_fallbacks": self.page_fallbacks,
        }

    def close(self) -> None:
        self.transport.close()

    def __repr__(self) -> str:
        return f"WebSearchRetriever({self.provider!r}, fetch_pages={self.fetch_pages}, cache={self.cache!r})"


def make_web_retriever(
    provider: str,
    url: str | None = None,
    *,
    api_key_env: str | None = None,
    options: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> WebSearchRetriever:
    """A `WebSearchRetriever` for the provider named `provider` ("searxng", "serper") at `url`
    (None: the provider's public endpoint). The API key is read from the environment variable
    named `api_key_env`; `kwargs` go to `WebSearchRetriever` (timeout_s, retries, ...)."""
    api_key = None
    key_source = "the API key"
    if api_key_env is not None:
        api_key = os.environ.get(api_key_env, "").strip()
        if not api_key:
            raise ValueError(f"env.api_key_env={api_key_env!r}: the environment variable {api_key_env} is not set or empty; "
                             f"export it with your API key (keys never go in config files)")
        key_source = f"the environment variable {api_key_env}"
    return WebSearchRetriever(make_provider(provider, url, api_key=api_key, options=options, key_source=key_source), **kwargs)
