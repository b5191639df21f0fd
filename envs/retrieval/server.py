"""The retrieval HTTP server, speaking the Search-R1 API, and a way to run it in the background.

    python -m envs.retrieval.server --corpus wiki.jsonl --index bm25 --port 8000
    curl -s 127.0.0.1:8000/retrieve -H 'content-type: application/json' \
         -d '{"queries": ["capital of france"], "topk": 3, "return_scores": true}'
    -> {"result": [[{"document": {"id": "..", "contents": "\"Paris\"\n.."}, "score": 12.3}, ...]]}

With "return_scores": false each hit is the bare document {"id", "contents"}, as in the
reference (PeterGriffinJin/Search-R1, search_r1/search/retrieval_server.py); a missing
"topk" takes the server's default (3, the reference's default). `GET /health` answers
{"status": "ok", "index": kind, "num_docs": n}.

Departures from the reference, all on bad input (the reference answers a good request
the same way): the request is bounded (number of queries, query length, topk, body size)
and anything out of bounds or malformed gets a 4xx with a JSON body
{"error": "<field>: <what is wrong and the limit>", "field": "<field>"}: 400 for a body
that is not JSON, 413 for too many or too long queries or too big a body (by its declared
length, or counted as a chunked one streams in), 422 for a missing field, a wrong type or
topk out of range. A failing search answers 500; the server never exits on a request. It binds 127.0.0.1 by default (the reference binds
0.0.0.0): it has no authentication.

`start_server_process` runs it as a subprocess for tests and training jobs: the child binds
its own socket (port 0 picks a free one without a race), reports the port through a file,
and exits when its parent does.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.body_limit import RequestBodyLimitMiddleware

from .base import Retriever
from .corpus import Hit
from .dense import DEFAULT_FAISS_TRAIN_SIZE, FaissOptions, serve_queries_single_threaded
from .index import INDEX_KINDS, build_or_load_index

log = logging.getLogger(__name__)

DEFAULT_TOPK = 3


@dataclass(frozen=True)
class ServerLimits:
    """Bounds on one request; each keeps one client from stalling or exhausting the server."""

    max_queries: int = 256  # queries per request
    max_query_chars: int = 2000  # characters per query
    max_topk: int = 100
    max_body_bytes: int = 8 << 20  # well above 256 queries x 2000 characters of JSON

    def __post_init__(self):
        for name in ("max_queries", "max_query_chars", "max_topk", "max_body_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} (--{name.replace('_', '-')}): must be at least 1")


class RetrieveRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # the reference ignores unknown fields too

    queries: list[str]
    topk: int | None = None
    return_scores: bool = False


def _error(status: int, field: str, message: str) -> JSONResponse:
    return JSONResponse({"error": f"{field}: {message}", "field": field}, status_code=status)


def _field_name(loc: Sequence[Any]) -> str:
    """('body', 'queries', 3) -> 'queries[3]'; the bare body is 'body'."""
    parts = [p for p in loc if p != "body"]
    name = ""
    for p in parts:
        name += f"[{p}]" if isinstance(p, int) else (f".{p}" if name else str(p))
    return name or "body"


def _document_json(hit: Hit) -> dict[str, str]:
    return {"id": hit.document.id, "contents": hit.document.contents}


def create_app(
    retriever: Retriever,
    *,
    limits: ServerLimits = ServerLimits(),
    default_topk: int = DEFAULT_TOPK,
    info: dict[str, Any] | None = None,
) -> FastAPI:
    """The FastAPI app serving `retriever`; `info` is merged into the /health answer."""
    app = FastAPI(title="MEM1 retriever (Search-R1 API)")
    # One search at a time: the indexes are not documented as thread-safe, and on a few
    # cores concurrent searches would only contend. FastAPI runs `def` endpoints in a
    # thread pool, so /health still answers while a search runs.
    search_lock = threading.Lock()
    health = {"status": "ok", **(info or {})}
    # A body sent without Content-Length (chunked) is counted as it streams in; the check
    # below only sees a declared length.
    app.add_middleware(RequestBodyLimitMiddleware, max_body_size=limits.max_body_bytes)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 413:  # raised by RequestBodyLimitMiddleware mid-stream
            return _error(413, "body", f"the body sent without Content-Length exceeds the limit of {limits.max_body_bytes} bytes")
        return await http_exception_handler(request, exc)

    @app.middleware("http")
    async def limit_body_size(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                return _error(400, "content-length", f"not a byte count: {length!r}")
            if int(length) > limits.max_body_bytes:
                return _error(413, "body", f"{int(length)} bytes exceeds the limit of {limits.max_body_bytes}")
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request", "type": ""}
        if first.get("type") == "json_invalid":
            detail = (first.get("ctx") or {}).get("error", "decode error")
            return _error(400, "body", f"not valid JSON ({detail})")
        field = _field_name(first.get("loc", ("body",)))
        if field == "body":  # missing, not an object, or not sent as JSON
            message = 'must be a JSON object like {"queries": ["..."], "topk": 3, "return_scores": true} (Content-Type: application/json)'
        else:
            message = first.get("msg", "invalid")
        return _error(422, field, message)

    @app.get("/health")
    def health_check():
        return health

    @app.post("/retrieve")
    def retrieve(request: RetrieveRequest):
        if len(request.queries) > limits.max_queries:
            return _error(413, "queries", f"{len(request.queries)} queries exceed the limit of {limits.max_queries} per request")
        for i, query in enumerate(request.queries):
            if len(query) > limits.max_query_chars:
                return _error(413, f"queries[{i}]", f"{len(query)} characters exceed the limit of {limits.max_query_chars}")
        topk = default_topk if request.topk is None else request.topk
        if not 1 <= topk <= limits.max_topk:
            return _error(422, "topk", f"{topk} is out of range: must be between 1 and {limits.max_topk}")
        try:
            with search_lock:
                results = retriever.search(request.queries, topk)
        except Exception as e:  # a failing search must not take the server down
            log.exception("search failed")
            return JSONResponse({"error": f"search failed: {type(e).__name__}: {e}", "field": None}, status_code=500)
        if request.return_scores:
            return {"result": [[{"document": _document_json(h), "score": h.score} for h in hits] for hits in results]}
        return {"result": [[_document_json(h) for h in hits] for hits in results]}

    return app


def format_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise OSError(f"cannot bind the retriever to {host}:{port} ({e}); choose another --port, or 0 for a free one") from None
    return sock


def _exit_when_orphaned(server) -> None:
    """Stop the server once the process that started it is gone (reparented), so a crashed
    training job does not leave a retriever holding its port and memory."""
    parent = os.getppid()

    def watch():
        while not server.should_exit:
            if os.getppid() != parent:
                log.warning("parent process %d is gone; stopping the retriever", parent)
                server.should_exit = True
                return
            threading.Event().wait(1.0)

    threading.Thread(target=watch, name="retriever-parent-watch", daemon=True).start()


def serve(
    corpus: str | Path,
    index: str = "bm25",
    host: str = "127.0.0.1",
    port: int = 8000,
    cache_dir: str | Path | None = None,
    *,
    limits: ServerLimits = ServerLimits(),
    default_topk: int = DEFAULT_TOPK,
    ready_file: str | Path | None = None,
    exit_with_parent: bool = False,
    faiss_options: FaissOptions = FaissOptions(),
) -> None:
    """Build or load the index, then serve it until interrupted (blocking). `ready_file`, if
    given, receives {"url": ..., "pid": ...} once the socket listens. `faiss_options` shape a
    dense or hybrid index (envs/retrieval/dense.py)."""
    import uvicorn

    sock = _bind(host, port)  # before the (possibly long) build: a busy port fails at once
    try:
        retriever = build_or_load_index(corpus, index, cache_dir, faiss_options=faiss_options)
        if index != "bm25":
            serve_queries_single_threaded()
        num_docs = len(retriever.documents)
        app = create_app(retriever, limits=limits, default_topk=default_topk, info={"index": index, "num_docs": num_docs})
        # Listen before the server loop starts: clients that come early wait in the backlog
        # instead of being refused (until now they were refused: bound, not listening).
        sock.listen(2048)
        url = format_url(host, sock.getsockname()[1])
        if host not in ("127.0.0.1", "localhost", "::1"):
            log.warning("the retriever listens on %s without authentication; anyone who reaches it can query it", host)
        if ready_file is not None:
            temp = Path(f"{ready_file}.tmp")
            temp.write_text(json.dumps({"url": url, "pid": os.getpid()}))
            temp.replace(ready_file)  # atomic: the parent never reads a half-written file
        print(f"retriever: {index} index of {corpus} ({num_docs} documents) at {url}", file=sys.stderr, flush=True)
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
        if exit_with_parent:
            _exit_when_orphaned(server)
        server.run(sockets=[sock])
    finally:
        sock.close()


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The server's options, for this module's CLI and for `mem1 serve retriever`."""
    parser.add_argument("--corpus", required=True, help="corpus JSONL (Search-R1 format: one {id, contents} per line)")
    parser.add_argument("--index", choices=INDEX_KINDS, default="bm25", help="retrieval index (default: bm25)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1; the server has no authentication)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0 picks a free one)")
    parser.add_argument("--cache-dir", default=None, help="where indexes are cached (default: <corpus>.index/ beside the corpus)")
    parser.add_argument("--faiss-index", default="Flat", help="dense/hybrid: a faiss index_factory string, e.g. Flat (exact, default), HNSW32, IVF4096,PQ32")
    parser.add_argument("--faiss-train-size", type=int, default=DEFAULT_FAISS_TRAIN_SIZE, help=f"dense/hybrid: most passages an IVF/PQ index trains on (default: {DEFAULT_FAISS_TRAIN_SIZE})")
    parser.add_argument("--faiss-search-k", type=int, default=None, help="dense/hybrid: IVF nprobe or HNSW efSearch (default: faiss's, 1 and 16)")
    parser.add_argument("--topk", type=int, default=DEFAULT_TOPK, help="hits per query when a request gives no topk (default: 3)")
    parser.add_argument("--max-queries", type=int, default=ServerLimits.max_queries, help="queries per request (default: 256)")
    parser.add_argument("--max-query-chars", type=int, default=ServerLimits.max_query_chars, help="characters per query (default: 2000)")
    parser.add_argument("--max-topk", type=int, default=ServerLimits.max_topk, help="largest topk a request may ask (default: 100)")
    parser.add_argument("--max-body-bytes", type=int, default=ServerLimits.max_body_bytes, help="request body size limit (default: 8 MiB)")
    parser.add_argument("--ready-file", default=None, help=argparse.SUPPRESS)  # for start_server_process
    parser.add_argument("--exit-with-parent", action="store_true", help=argparse.SUPPRESS)
    return parser


def run_from_args(args: argparse.Namespace) -> int:
    if not 1 <= args.topk <= args.max_topk:
        raise SystemExit(f"--topk {args.topk}: must be between 1 and --max-topk ({args.max_topk})")
    limits = ServerLimits(
        max_queries=args.max_queries, max_query_chars=args.max_query_chars, max_topk=args.max_topk, max_body_bytes=args.max_body_bytes
    )
    faiss_options = FaissOptions(args.faiss_index, args.faiss_train_size, args.faiss_search_k)  # ValueError on a bad size
    serve(
        args.corpus, args.index, args.host, args.port, args.cache_dir,
        limits=limits, default_topk=args.topk, ready_file=args.ready_file, exit_with_parent=args.exit_with_parent,
        faiss_options=faiss_options,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    parser = add_arguments(argparse.ArgumentParser(prog="python -m envs.retrieval.server", description=__doc__.split("\n")[0]))
    args = parser.parse_args(argv)
    try:
        return run_from_args(args)
    except (OSError, ValueError, RuntimeError) as e:  # bad corpus, busy port, unreadable cache: one clear line
        print(f"retriever: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
