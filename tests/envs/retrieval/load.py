"""Load on the retrieval server: concurrent clients for a bounded time, with requests over
every limit sent among them, each of which must be refused with its 4xx and field.

    with start_server_process(corpus, extra_args=limit_args(LOAD_LIMITS)) as server:
        result = run_load(server.url, clients=8, duration_s=5, queries=[...], limits=LOAD_LIMITS)
        result.errors, result.summary()        # failed good requests, latencies and rates

Shared by tests/envs/retrieval/test_load.py and experiments/bench/reliability.py. The good
requests go through the real client (`HttpRetriever`) with no retries, so any failure
counts; the bad ones are raw HTTP, since the client refuses some of them itself.
"""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np
import requests

from envs.retrieval import HttpRetriever, RetrievalError, ServerLimits


# Small limits, so exceeding each is cheap.
LOAD_LIMITS = ServerLimits(max_queries=16, max_query_chars=200, max_topk=10, max_body_bytes=64 << 10)


def limit_args(limits: ServerLimits) -> list[str]:
    """The server options that set `limits`."""
    return [f"--{name.replace('_', '-')}={value}" for name, value in asdict(limits).items()]


def rejections(limits: ServerLimits) -> dict[str, tuple[dict[str, Any], int, str]]:
    """name -> (requests.post keyword arguments, expected status, the field the error names)."""
    json_type = {"content-type": "application/json"}
    return {
        "body over the limit": ({"data": b" " * (limits.max_body_bytes + 1), "headers": json_type}, 413, "body"),
        # chunked: no Content-Length to check, so the server must count while it reads
        "chunked body over the limit": ({"data": iter([b" " * 4096] * (limits.max_body_bytes // 4096 + 2)), "headers": json_type},
                                        413, "body"),
        "too many queries": ({"json": {"queries": ["volcano"] * (limits.max_queries + 1)}}, 413, "queries"),
        "topk over the limit": ({"json": {"queries": ["volcano"], "topk": limits.max_topk + 1}}, 422, "topk"),
        "query too long": ({"json": {"queries": ["volcano", "v" * (limits.max_query_chars + 1)]}}, 413, "queries[1]"),
    }


def check_rejection(url: str, name: str, limits: ServerLimits, session: requests.Session | None = None) -> str | None:
    """Send one bad request; None if it got its status and a JSON error naming its field,
    else what went wrong."""
    kwargs, status, field_name = rejections(limits)[name]
    try:
        response = (session or requests).post(f"{url}/retrieve", timeout=10, **kwargs)
        body = response.json()
    except (requests.RequestException, ValueError) as e:
        return f"{name}: {type(e).__name__}: {e}"
    if response.status_code != status or body.get("field") != field_name or not str(body.get("error", "")).startswith(f"{field_name}: "):
        return f"{name}: expected {status} naming {field_name!r}, got {response.status_code} {body}"
    return None


@dataclass
class LoadResult:
    clients: int
    duration_s: float
    latencies_s: list[float] = field(default_factory=list)  # of the good requests, failed ones included
    per_client: list[int] = field(default_factory=list)  # good requests each client sent
    errors: list[str] = field(default_factory=list)  # good requests that failed
    rejected: dict[str, int] = field(default_factory=dict)  # bad requests refused as expected, by kind
    rejection_failures: list[str] = field(default_factory=list)  # bad requests not refused as expected

    def summary(self) -> dict[str, Any]:
        lat = np.asarray(self.latencies_s) * 1000
        ms = {f"{k}_ms": round(float(v), 2) for k, v in zip(("p50", "p99", "max"), (*np.percentile(lat, [50, 99]), lat.max()))} if lat.size else {}
        return {
            "clients": self.clients, "duration_s": round(self.duration_s, 2), "requests": len(self.latencies_s),
            "errors": len(self.errors), "requests_per_s": round(len(self.latencies_s) / self.duration_s, 1), **ms,
            "min_requests_per_client": min(self.per_client, default=0),
            "rejected_under_load": dict(self.rejected), "rejection_failures": len(self.rejection_failures),
            "first_errors": (self.errors + self.rejection_failures)[:5],
        }


def run_load(url: str, *, clients: int, duration_s: float, queries: Sequence[str], limits: ServerLimits, topk: int = 3,
             seed: int = 0) -> LoadResult:
    """`clients` threads each send one-query searches back to back for `duration_s`, while
    one more thread sends the bad requests of `rejections(limits)` in turn."""
    result = LoadResult(clients, duration_s, per_client=[0] * clients)
    lock = threading.Lock()
    deadline = time.monotonic() + duration_s

    def client(i: int) -> None:
        rng = random.Random(f"{seed}:{i}")
        retriever = HttpRetriever(url, timeout=10, retries=0)
        try:
            while time.monotonic() < deadline:
                query = rng.choice(queries)
                start = time.perf_counter()
                error = None
                try:
                    (hits,) = retriever.search([query], topk)
                    if len(hits) > topk:
                        error = f"{query!r}: {len(hits)} hits for topk={topk}"
                except RetrievalError as e:
                    error = f"{query!r}: {e}"
                with lock:
                    result.latencies_s.append(time.perf_counter() - start)
                    result.per_client[i] += 1
                    if error is not None:
                        result.errors.append(error)
        finally:
            retriever.close()

    def abuser() -> None:
        names = list(rejections(limits))
        with requests.Session() as session:
            k = 0
            while time.monotonic() < deadline:
                name = names[k % len(names)]
                failure = check_rejection(url, name, limits, session)
                with lock:
                    if failure is None:
                        result.rejected[name] = result.rejected.get(name, 0) + 1
                    else:
                        result.rejection_failures.append(failure)
                k += 1
                time.sleep(0.02)  # a steady trickle of bad requests, not a flood

    start = time.monotonic()
    with ThreadPoolExecutor(clients + 1) as pool:
        futures = [pool.submit(client, i) for i in range(clients)] + [pool.submit(abuser)]
        for f in futures:
            f.result()  # a crashed load thread is a failure of the run, not a quiet gap
    result.duration_s = time.monotonic() - start
    return result
