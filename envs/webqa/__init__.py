"""Web QA: the multi-objective QA environment (envs/qa.py) with a web-search API as its
retriever. `WebSearchRetriever` implements `Retriever`, so `QAEnv` is used unchanged:

    retriever = make_web_retriever("searxng", "http://127.0.0.1:8888", cache_dir="runs/webqa-cache")
    env = QAEnv(retriever, QAConfig(topk=3))
    obs, reward, terminated, truncated, info = env.step("<think>...</think><search>q</search>")

Observations are the results' snippets (or, with fetch_pages=True, the result pages' text,
HTML stripped and capped) in the QA env's passage format, with the result URLs as document
ids. Modules: providers.py (the SearXNG and Serper-style wire formats, a registry by name),
transport.py (timeouts, retries, Retry-After, rate limit), cache.py (results on disk),
pages.py (HTML to text), retriever.py (the Retriever), server.py (a local server speaking
both formats over the generated world, with fault injection, for tests and offline runs).

Departure from the local-retriever QA env: none in the protocol or the prompt (the agent
searches and answers the same way; the few-shot demonstration stays valid). The prompt says
"knowledge base" for both, which also covers a search engine.

The server module (FastAPI, uvicorn, the BM25 index) is imported on first use.
"""

from importlib import import_module

from .cache import ResultCache
from .pages import cap_text, html_to_text
from .providers import (
    PROVIDERS, HttpCall, ResponseFormatError, SearchProvider, SearxngProvider, SerperProvider, WebResult, make_provider,
)
from .retriever import WebSearchRetriever, make_web_retriever
from .transport import HttpTransport, RateLimiter, parse_retry_after

_LAZY = {
    "Fault": ".server",
    "LocalSearchServer": ".server",
    "RecordedRequest": ".server",
    "create_search_app": ".server",
    "start_local_search_server": ".server",
}

__all__ = [
    "PROVIDERS", "HttpCall", "HttpTransport", "RateLimiter", "ResponseFormatError", "ResultCache", "SearchProvider",
    "SearxngProvider", "SerperProvider", "WebResult", "WebSearchRetriever", "cap_text", "html_to_text",
    "make_provider", "make_web_retriever", "parse_retry_after", *_LAZY,
]  # fmt: skip


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
