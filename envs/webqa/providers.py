"""Wire formats of web-search APIs: one provider per format builds the HTTP call for a query
and parses the answer into `WebResult`s. Providers do no I/O; the transport sends the call.

    provider = make_provider("searxng", "http://127.0.0.1:8888")      # a SearXNG instance
    provider = make_provider("serper", api_key=key)                    # google.serper.dev
    call = provider.build_call("capital of france", k=3)               # HttpCall(method, url, ...)
    results = provider.parse(response_json, k=3)                       # [WebResult(url, title, snippet, ...)]

Formats (facts checked against the projects' docs and source, see the report of this module):
- SearXNG (`searxng`): `GET /search?q=...&format=json` with optional `pageno`, `language`,
  `categories`, `engines`, `time_range`, `safesearch`. The answer is an object with `query`,
  `results` (each with `url`, `title`, `content`, `engine`, `score`, ...), `answers`,
  `corrections`, `infoboxes`, `suggestions`, `unresponsive_engines`; releases before
  2026-05 also sent `number_of_results`. `answers` were strings in older releases and are
  objects with an `answer` field in newer ones: both are read. The page size is fixed by the
  instance (no count parameter), so the client keeps the first k. An instance answers 403
  when the json format is not enabled in its settings (search.formats in settings.yml).
- Serper-style (`serper`): `POST https://google.serper.dev/search` with header `X-API-KEY`
  and JSON body `{"q": ..., "num": k}` (optional `gl`, `hl`, `location`, `tbs`, `page`).
  The answer holds `searchParameters`, `organic` (each with `title`, `link`, `snippet`,
  `position`), and optionally `answerBox` and `knowledgeGraph`. A bad key gets 403
  `{"message": "Unauthorized.", "statusCode": 403}`.

A direct answer (SearXNG `answers`/`infoboxes`, Serper `answerBox`/`knowledgeGraph`) comes
first, as a result of kind "answer", followed by the ranked results, k in all: that is what
a person sees on the results page. A result without a URL is skipped (SearXNG has result
types without one); a missing results list or an item that is not an object is an error
that names what was missing (`ResponseFormatError`).

Add a format: subclass `SearchProvider` and register it in `PROVIDERS`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping
from urllib.parse import urlsplit

RESULT = "result"
ANSWER = "answer"


@dataclass(frozen=True)
class WebResult:
    """One entry of a results page."""

    url: str
    title: str
    snippet: str
    score: float = math.nan  # the engine's relevance (SearXNG score; Serper 1/position); nan if none
    kind: str = RESULT  # RESULT, or ANSWER for a direct answer / answer box / infobox

    def as_dict(self) -> dict[str, Any]:
        return {"url": self.url, "title": self.title, "snippet": self.snippet, "score": self.score, "kind": self.kind}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "WebResult":
        return cls(str(d["url"]), str(d["title"]), str(d["snippet"]), float(d["score"]), str(d.get("kind", RESULT)))


@dataclass(frozen=True)
class HttpCall:
    """One HTTP request, as data. `headers` may hold an API key: it is kept out of repr, so a
    logged or printed call never shows it."""

    method: str
    url: str
    params: Mapping[str, Any] | None = None
    json: Mapping[str, Any] | None = None
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)


class ResponseFormatError(ValueError):
    """An answer that does not have the provider's shape; the message names what is missing."""


def search_endpoint(url: str) -> str:
    """'http://host:8888' or 'http://host:8888/' -> 'http://host:8888/search'; a URL whose
    path already ends in /search is kept. Only http(s) URLs are accepted."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"search url {url!r} must be an http:// or https:// URL (e.g. http://127.0.0.1:8888)")
    if parts.query or parts.fragment:
        raise ValueError(f"search url {url!r} must not carry a query string: give the instance's base URL")
    base = url.rstrip("/")
    return base if base.endswith("/search") else f"{base}/search"


class SearchProvider(ABC):
    """A wire format bound to an endpoint (and, where the format has one, an API key)."""

    name: ClassVar[str]  # registry key, e.g. "searxng"
    label: ClassVar[str]  # for messages, e.g. "SearXNG"
    default_url: ClassVar[str | None] = None  # the public endpoint, if the format has one
    option_keys: ClassVar[frozenset[str]] = frozenset()  # extra request parameters allowed

    def __init__(self, url: str | None = None, *, api_key: str | None = None, options: Mapping[str, Any] | None = None,
                 key_source: str = "the API key"):
        url = url or self.default_url
        if url is None:
            raise ValueError(f"{self.label} has no public endpoint: set the url of your instance (e.g. env.url: http://127.0.0.1:8888)")
        self.endpoint = search_endpoint(url)
        options = dict(options or {})
        unknown = sorted(set(options) - self.option_keys)
        if unknown:
            raise ValueError(f"{self.name} options {unknown} are not parameters of the {self.label} API; allowed: {sorted(self.option_keys)}")
        self.options = options
        self._api_key = api_key or None
        self.key_source = key_source  # where the key came from, for error messages (never the key)

    @property
    def has_api_key(self) -> bool:
        return self._api_key is not None

    def identity(self) -> list[Any]:
        """What decides the answer besides the query and k (part of the cache key). The key
        is left out: it changes who pays, not what comes back."""
        return [self.name, self.endpoint, sorted(self.options.items())]

    @abstractmethod
    def build_call(self, query: str, k: int) -> HttpCall:
        """The request that searches `query` for (at least) `k` results."""

    @abstractmethod
    def parse(self, payload: Any, k: int) -> list[WebResult]:
        """At most `k` results from a decoded JSON answer; `ResponseFormatError` on a wrong shape."""

    def explain_rejection(self, status: int) -> str:
        """A hint for a 4xx answer (what the user should change); empty when there is none."""
        return ""

    def __repr__(self) -> str:
        key = ", api_key=<set>" if self.has_api_key else ""
        return f"{type(self).__name__}({self.endpoint!r}{key})"


def _object(payload: Any, label: str) -> Mapping[str, Any]:
    if not isinstance(payload, Mapping):
        raise ResponseFormatError(f"{label} answer is a JSON {type(payload).__name__}, expected an object")
    return payload


def _list(payload: Mapping[str, Any], key: str, label: str, *, required: bool) -> list[Any]:
    value = payload.get(key)
    if value is None:
        if required:
            raise ResponseFormatError(f"{label} answer has no {key!r} list (top-level keys: {sorted(payload)})")
        return []
    if not isinstance(value, list):
        raise ResponseFormatError(f"{label} answer's {key!r} is a {type(value).__name__}, expected a list")
    return value


def _items(values: list[Any], where: str) -> list[Mapping[str, Any]]:
    for i, item in enumerate(values):
        if not isinstance(item, Mapping):
            raise ResponseFormatError(f"{where}[{i}] is a {type(item).__name__}, expected an object")
    return values


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):  # Serper's snippetHighlighted is a list of strings
        return " ".join(str(v) for v in value)
    return " ".join(str(value).split())  # one line: observations show one result per line


def _score(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


class SearxngProvider(SearchProvider):
    name = "searxng"
    label = "SearXNG"
    option_keys = frozenset({"language", "categories", "engines", "pageno", "time_range", "safesearch"})

    def build_call(self, query: str, k: int) -> HttpCall:
        # No count parameter exists: the instance's page size applies and parse keeps k.
        return HttpCall("GET", self.endpoint, params={"q": query, "format": "json", **self.options})

    def parse(self, payload: Any, k: int) -> list[WebResult]:
        body = _object(payload, self.label)
        results = _items(_list(body, "results", self.label, required=True), "results")
        out: list[WebResult] = []
        for i, answer in enumerate(_list(body, "answers", self.label, required=False)):
            text = answer.get("answer") if isinstance(answer, Mapping) else answer  # object (new) or string (old)
            url = answer.get("url") if isinstance(answer, Mapping) else None
            if _text(text):
                out.append(WebResult(url or f"searxng:answer:{i}", "Answer", _text(text), kind=ANSWER))
        for i, box in enumerate(_items(_list(body, "infoboxes", self.label, required=False), "infoboxes")):
            if _text(box.get("content")):
                url = box.get("id") or box.get("url") or f"searxng:infobox:{i}"
                out.append(WebResult(str(url), _text(box.get("infobox")) or "Infobox", _text(box.get("content")), kind=ANSWER))
        for item in results:
            url = item.get("url")
            if not url:
                continue
            out.append(WebResult(str(url), _text(item.get("title")) or str(url), _text(item.get("content")), _score(item.get("score"))))
        return out[:k]

    def explain_rejection(self, status: int) -> str:
        if status == 403:
            return ("SearXNG answers 403 when the json format is disabled: add json to search.formats in the "
                    "instance's settings.yml (search: formats: [html, json]); many public instances disable it")
        return ""


class SerperProvider(SearchProvider):
    name = "serper"
    label = "Serper-style API"
    default_url = "https://google.serper.dev/search"
    option_keys = frozenset({"gl", "hl", "location", "tbs", "page", "autocorrect"})

    def build_call(self, query: str, k: int) -> HttpCall:
        headers = {"X-API-KEY": self._api_key} if self._api_key is not None else {}
        return HttpCall("POST", self.endpoint, json={"q": query, "num": k, **self.options}, headers=headers)

    def parse(self, payload: Any, k: int) -> list[WebResult]:
        body = _object(payload, self.label)
        if "organic" not in body and "searchParameters" not in body:  # not a results page at all
            raise ResponseFormatError(f"{self.label} answer has neither 'organic' nor 'searchParameters' (top-level keys: {sorted(body)})")
        organic = _items(_list(body, "organic", self.label, required=False), "organic")
        out: list[WebResult] = []
        box = body.get("answerBox")
        if isinstance(box, Mapping):
            text = _text(box.get("answer")) or _text(box.get("snippet")) or _text(box.get("snippetHighlighted"))
            if text:
                out.append(WebResult(str(box.get("link") or "serper:answerBox"), _text(box.get("title")) or "Answer", text, kind=ANSWER))
        graph = body.get("knowledgeGraph")
        if isinstance(graph, Mapping) and (_text(graph.get("description")) or graph.get("attributes")):
            attributes = graph.get("attributes") if isinstance(graph.get("attributes"), Mapping) else {}
            text = " ".join([_text(graph.get("description"))] + [f"{a}: {_text(v)}." for a, v in attributes.items()]).strip()
            url = graph.get("descriptionLink") or graph.get("website") or "serper:knowledgeGraph"
            out.append(WebResult(str(url), _text(graph.get("title")) or "Knowledge graph", text, kind=ANSWER))
        for item in organic:
            url = item.get("link")
            if not url:
                continue
            position = _score(item.get("position"))
            score = 1.0 / position if position > 0 else math.nan
            out.append(WebResult(str(url), _text(item.get("title")) or str(url), _text(item.get("snippet")), score))
        return out[:k]

    def explain_rejection(self, status: int) -> str:
        if status in (401, 403):
            if not self.has_api_key:
                return "no API key was sent: set env.api_key_env to the name of an environment variable holding the key"
            return f"the API key was refused: check {self.key_source}"
        return ""


PROVIDERS: dict[str, type[SearchProvider]] = {"searxng": SearxngProvider, "serper": SerperProvider}


def make_provider(name: str, url: str | None = None, *, api_key: str | None = None,
                  options: Mapping[str, Any] | None = None, key_source: str = "the API key") -> SearchProvider:
    """The provider registered as `name`, bound to `url` (None: the format's public endpoint)."""
    if name not in PROVIDERS:
        raise ValueError(f"search provider {name!r} is unknown: allowed {sorted(PROVIDERS)}")
    return PROVIDERS[name](url, api_key=api_key, options=options, key_source=key_source)
