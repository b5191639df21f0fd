"""HTTP for web search: a thread-safe rate limiter and a transport that sends one call with a
timeout, retries and backoff, and returns the decoded JSON.

    limiter = RateLimiter(rate_per_s=5.0)
    transport = HttpTransport(timeout_s=10, retries=3, backoff_s=0.5, limiter=limiter)
    payload = transport.fetch_json(provider.build_call("query", 3), provider)

Retried, with exponential backoff (`backoff_s`, twice that, ..., at most `max_backoff_s`):
timeouts, connection errors, 5xx and 429. A `Retry-After` header (seconds or an HTTP date)
sets the wait when it is longer than the backoff; one longer than `max_retry_after_s` ends
the search at once (a quota that resets in an hour is not worth a rollout's time). Not
retried: another 4xx (a bad request or key does not improve by repeating it) and a 200 whose
body is not JSON. Every attempt, retries included, waits for the rate limiter. After the
last try the search raises `RetrievalError` naming the endpoint, the attempts and the last
failure, plus the provider's hint for a rejection (SearXNG's disabled json format, a bad key).

Same policy as envs/retrieval/client.py (HttpRetriever); written as its own loop because
every attempt must pass the rate limiter and honour Retry-After, which urllib3's Retry
(inside requests' adapter) would do below the limiter's reach. No jitter: runs stay
reproducible, and one client per job does not stampede.

Headers (the API key) are never logged or put in messages; only method, URL and status are.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import Callable

import requests
from urllib3.exceptions import InvalidHeader
from urllib3.util.retry import Retry

from ..retrieval.base import RetrievalError
from .pages import cap_text, page_text
from .providers import HttpCall, SearchProvider

log = logging.getLogger(__name__)

USER_AGENT = "mem1-webqa/0.1 (research agent)"


class RateLimiter:
    """At most `rate_per_s` requests per second on average, with bursts of up to `burst`
    (1: a plain minimum interval). Thread-safe: concurrent callers get successive slots.

    A virtual-scheduling token bucket (GCRA): `_next` is when the bucket is next empty.
    `reserve()` books the next slot and returns how long to wait for it; `acquire()` also
    sleeps that long. The clock and sleep are injectable, so tests check the computed waits
    without timing anything."""

    def __init__(self, rate_per_s: float | None, burst: int = 1, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        if rate_per_s is not None and rate_per_s <= 0:
            raise ValueError(f"rate_per_s={rate_per_s}: must be > 0 (or None for no limit)")
        if burst < 1:
            raise ValueError(f"burst={burst}: must be >= 1")
        self.rate_per_s = rate_per_s
        self.interval = 0.0 if rate_per_s is None else 1.0 / rate_per_s
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._next = -float("inf")
        self._lock = threading.Lock()

    def reserve(self) -> float:
        """Book the next request slot; the seconds to wait before sending (0 if free now)."""
        if self.rate_per_s is None:
            return 0.0
        with self._lock:
            now = self._clock()
            start = max(self._next, now)
            wait = max(0.0, start - now - (self.burst - 1) * self.interval)
            self._next = start + self.interval
            return wait

    def acquire(self) -> float:
        wait = self.reserve()
        if wait > 0:
            self._sleep(wait)
        return wait


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None if absent or unreadable."""
    if not value:
        return None
    try:
        return float(Retry().parse_retry_after(value))  # urllib3 reads both forms
    except InvalidHeader:
        log.debug("ignoring unreadable Retry-After %r", value)
        return None


def answer_excerpt(response: requests.Response, max_chars: int = 300) -> str:
    """What an error answer says, on one line for a message: the error field of a JSON body
    (SearXNG "error", Serper "message", FastAPI "detail"), else the body's text with HTML
    markup stripped, capped at `max_chars`."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        found = next((body[k] for k in ("error", "message", "detail") if body.get(k)), body)
        text = " ".join(str(found).split())
    else:
        content_type = response.headers.get("Content-Type", "")
        text = page_text(content_type, response.text) if body is None else None
        text = text if text is not None else " ".join(response.text.split())
    return cap_text(text, max_chars) if text else "(empty body)"


class HttpTransport:
    """Sends `HttpCall`s. One requests.Session per thread (a Session is not documented as
    thread-safe), so one transport may serve several threads."""

    def __init__(self, *, timeout_s: float = 10.0, retries: int = 3, backoff_s: float = 0.5, max_backoff_s: float = 30.0,
                 max_retry_after_s: float = 60.0, limiter: RateLimiter | None = None,
                 sleep: Callable[[float], None] = time.sleep, user_agent: str = USER_AGENT):
        if timeout_s <= 0 or retries < 0 or backoff_s < 0 or max_backoff_s < 0 or max_retry_after_s < 0:
            raise ValueError(f"need timeout_s > 0 and retries, backoff_s, max_backoff_s, max_retry_after_s >= 0; got "
                             f"{timeout_s=}, {retries=}, {backoff_s=}, {max_backoff_s=}, {max_retry_after_s=}")
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_retry_after_s = max_retry_after_s
        self.limiter = limiter or RateLimiter(None)
        self.user_agent = user_agent
        self._sleep = sleep
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()
        self.attempts = 0  # requests sent (retries included); for stats and tests

    @property
    def session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers["User-Agent"] = self.user_agent
            self._local.session = session
            with self._sessions_lock:
                self._sessions.append(session)
        return session

    def _backoff(self, attempt: int) -> float:
        return min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))

    def fetch_json(self, call: HttpCall, provider: SearchProvider):
        """The decoded JSON answer to `call`, or `RetrievalError` (see the module docstring)."""
        where = f"{provider.label} at {call.url}"
        failure = ""
        wait = 0.0
        for attempt in range(self.retries + 1):
            if attempt:
                self._sleep(wait)
            self.limiter.acquire()
            with self._sessions_lock:
                self.attempts += 1
            wait = self._backoff(attempt + 1)
            try:
                response = self.session.request(call.method, call.url, params=call.params, json=call.json,
                                                headers=dict(call.headers), timeout=self.timeout_s)
            except requests.Timeout:
                failure = f"no answer within the {self.timeout_s:g} s timeout"
                log.debug("%s attempt %d: %s", where, attempt + 1, failure)
                continue
            except requests.RequestException as e:  # refused, reset, DNS: worth another try
                failure = f"{type(e).__name__}: {e}"
                log.debug("%s attempt %d failed: %s", where, attempt + 1, failure)
                continue
            status = response.status_code
            if status == 429 or status >= 500:  # overloaded or failing: wait and retry
                failure = f"HTTP {status}: {answer_excerpt(response)}"
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                log.debug("%s attempt %d: %s (Retry-After %s)", where, attempt + 1, failure, retry_after)
                if retry_after is not None:
                    if retry_after > self.max_retry_after_s:
                        raise RetrievalError(f"{where} asked to wait {retry_after:.0f} s before retrying (HTTP {status}), "
                                             f"longer than max_retry_after_s={self.max_retry_after_s:g}; last error: {failure}")
                    wait = max(wait, retry_after)
                continue
            if status >= 400:
                hint = provider.explain_rejection(status)
                raise RetrievalError(f"{where} rejected the request (HTTP {status}): {answer_excerpt(response)}" + (f"; {hint}" if hint else ""))
            try:
                return response.json()
            except ValueError:
                kind = response.headers.get("Content-Type", "no content type")
                raise RetrievalError(f"{where} answered HTTP {status} with a body that is not JSON ({kind}): {response.text[:200]!r}") from None
        raise RetrievalError(f"{where} did not answer after {self.retries + 1} attempts; last error: {failure}")

    def fetch_text(self, url: str, *, max_bytes: int, timeout_s: float | None = None) -> tuple[str, str] | None:
        """(content type, body text) of a page, reading at most `max_bytes`; None on any
        failure (no retries: the caller falls back to the snippet)."""
        try:
            with self.session.get(url, timeout=timeout_s or self.timeout_s, stream=True) as response:
                if response.status_code != 200:
                    log.debug("page %s: HTTP %d", url, response.status_code)
                    return None
                content_type = response.headers.get("Content-Type", "")
                data = bytearray()
                for chunk in response.iter_content(chunk_size=65536):
                    data += chunk
                    if len(data) >= max_bytes:  # a huge page is cut, not read to the end
                        break
        except requests.RequestException as e:
            log.debug("page %s failed: %s: %s", url, type(e).__name__, e)
            return None
        charset = re.search(r"charset=([\w.:-]+)", content_type, re.IGNORECASE)
        try:
            text = bytes(data[:max_bytes]).decode(charset.group(1) if charset else "utf-8", errors="replace")
        except LookupError:  # an unknown charset name
            text = bytes(data[:max_bytes]).decode("utf-8", errors="replace")
        return content_type, text

    def close(self) -> None:
        with self._sessions_lock:
            for session in self._sessions:
                session.close()
            self._sessions.clear()
        self._local = threading.local()
