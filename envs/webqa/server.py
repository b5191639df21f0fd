"""A local web-search server on 127.0.0.1 that speaks both wire formats of providers.py over a
corpus (by default the generated world's), serves every result as an HTML page, and fails on
request for tests.

    with start_local_search_server("corpus.jsonl") as server:    # or documents=[...]
        retriever = make_web_retriever("searxng", server.url)     # or "serper"
        server.inject(Fault(status=500), Fault(delay_s=2.0))     # the next two searches misbehave
        server.search_requests()                                  # what it received, in order

    python -m envs.webqa.server --corpus corpus.jsonl --port 8888 [--api-key-env SEARCH_KEY]
    curl '127.0.0.1:8888/search?q=Misfend&format=json'
    curl -X POST 127.0.0.1:8888/search -H 'content-type: application/json' -d '{"q": "Misfend", "num": 3}'

Routes:
- `GET /search?q=&format=json[&pageno=]`: SearXNG's JSON answer (query, number_of_results,
  results with url/title/content/engine/score/..., answers, corrections, infoboxes,
  suggestions, unresponsive_engines). Like SearXNG, a page holds a fixed number of results
  (`page_size`), a format other than json (or json when `searxng_json=False`) gets 403, and
  a missing q gets 400 {"error": "No query"}.
- `POST /search` with JSON {"q", "num", "page"}: the Serper-style answer (searchParameters,
  organic with title/link/snippet/position, credits). With `api_key` set, a request without
  that X-API-KEY gets 403 {"message": "Unauthorized.", "statusCode": 403}, as Serper does.
- `GET /page/<doc id>`: the result page: the passage, then the entity's other passages (same
  title), inside page chrome (head, script, style, nav, footer) a stripper must remove.
  Snippets are the passage cut at `snippet_chars`, so fetching pages gives more text.
- `GET /healthz`: "OK". Control, for tests and for the CLI server: `POST /_control/faults`
  with {"faults": [{"delay_s", "status", "body", "retry_after"}, ...]} queues faults,
  `GET /_control/requests` lists the recorded requests, `POST /_control/reset` clears both.

Search is BM25 over the corpus (envs.retrieval's index). Each search request takes the next
queued `Fault`, if any: it is delayed, answered with an error status (and Retry-After), or
answered with a raw body (malformed JSON). The server runs uvicorn in a daemon thread of
the calling process (port 0 picks a free port): tests and the web-QA domain read its
request log and queue faults directly, and no second interpreter has to import the index.
It has no authentication beyond the optional key: keep it on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import hmac
import html
import logging
import os
import socket
import sys
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence
from urllib.parse import quote, urlsplit

from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response

from starlette.concurrency import run_in_threadpool

from ..retrieval.base import Retriever
from ..retrieval.corpus import Document, read_corpus_jsonl
from .pages import cap_text

log = logging.getLogger(__name__)

ENGINE = "mem1-local"
FORBIDDEN_HTML = "<!doctype html>\n<html lang=en>\n<title>403 Forbidden</title>\n<h1>Forbidden</h1>\n"


@dataclass(frozen=True)
class Fault:
    """How the server mistreats one search request (tests only)."""

    delay_s: float = 0.0  # wait this long before answering (a slow server; the client may time out)
    status: int | None = None  # answer this HTTP status with a JSON error body instead of results
    body: str | None = None  # answer with this raw body (status or 200), e.g. malformed JSON
    retry_after: str | None = None  # Retry-After header sent with the status

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Fault":
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"fault keys {sorted(unknown)} unknown: allowed {sorted(cls.__dataclass_fields__)}")
        return cls(**d)


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: str | None  # the search query (None for pages)
    time: float  # time.monotonic() on arrival
    api_key_ok: bool | None = None  # POST /search: None if no X-API-KEY header, else whether it was accepted
    fault: Fault | None = None


class ServerState:
    """What the routes share: queued faults, the request log, the auth and format switches."""

    def __init__(self, api_key: str | None = None, searxng_json: bool = True):
        self.api_key = api_key
        self.searxng_json = searxng_json
        self.faults: deque[Fault] = deque()
        self.requests: list[RecordedRequest] = []
        self.stopping = threading.Event()  # cuts injected delays short when the server stops
        self.lock = threading.Lock()

    def record(self, request: RecordedRequest) -> None:
        with self.lock:
            self.requests.append(request)

    def next_fault(self) -> Fault | None:
        with self.lock:
            return self.faults.popleft() if self.faults else None


def _page_url(base: str, doc: Document) -> str:
    return f"{base}page/{quote(doc.id, safe='')}"


def render_page(doc: Document, others: Iterable[Document]) -> str:
    """A result page: the passage and the entity's other passages, inside page chrome."""
    title = html.escape(doc.title)
    paragraphs = "\n".join(f"<p>{html.escape(d.text)}</p>" for d in [doc, *others])
    return (
        f"<!doctype html>\n<html lang=en><head><meta charset=utf-8><title>{title} - Local wiki</title>\n"
        "<style>body { font-family: sans-serif } nav a { margin: 0 4px }</style>\n"
        "<script>window.analytics = {track: function () { return 'not page text'; }};</script></head>\n"
        "<body><nav><a href='/'>Home</a> | <a href='/random'>Random page</a></nav>\n"
        f"<main><article><h1>{title}</h1>\n{paragraphs}\n</article></main>\n"
        "<footer>Local wiki of a generated world &middot; all facts are made up</footer></body></html>\n"
    )


def create_search_app(
    index: Retriever, documents: Sequence[Document], state: ServerState | None = None,
    *, page_size: int = 10, snippet_chars: int = 160,
) -> FastAPI:
    """The app serving `index` (whose hits are `documents`) in both wire formats."""
    if page_size < 1 or snippet_chars < 20:
        raise ValueError(f"need page_size >= 1 and snippet_chars >= 20, got {page_size=}, {snippet_chars=}")
    state = state or ServerState()
    by_id = {d.id: d for d in documents}
    by_title: dict[str, list[Document]] = {}
    for d in documents:
        by_title.setdefault(d.title, []).append(d)
    search_lock = threading.Lock()  # the indexes are not documented as thread-safe
    app = FastAPI(title="MEM1 local web search (SearXNG and Serper-style APIs)")
    app.state.search = state

    def search(query: str, k: int) -> list:
        with search_lock:
            return index.search([query], k)[0]

    def apply_fault(fault: Fault | None, error_body: dict[str, Any]) -> Response | None:
        if fault is None:
            return None
        if fault.delay_s > 0:
            state.stopping.wait(fault.delay_s)
        headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else None
        if fault.body is not None:
            return Response(fault.body, status_code=fault.status or 200, media_type="application/json", headers=headers)
        if fault.status is not None:
            return JSONResponse(error_body | {"injected_status": fault.status}, status_code=fault.status, headers=headers)
        return None

    @app.get("/healthz")
    def healthz():
        return PlainTextResponse("OK")

    @app.get("/search")
    def searxng_search(request: Request, q: str | None = None, output_format: str = Query("html", alias="format"), pageno: int = 1):
        fault = state.next_fault()
        state.record(RecordedRequest("GET", "/search", q, time.monotonic(), fault=fault))
        failed = apply_fault(fault, {"error": "search error"})
        if failed is not None:
            return failed
        if output_format != "json" or not state.searxng_json:  # SearXNG: a format not in search.formats
            return HTMLResponse(FORBIDDEN_HTML, status_code=403)
        if not q:
            return JSONResponse({"error": "No query"}, status_code=400)
        if pageno < 1:
            return JSONResponse({"error": "pageno must be >= 1"}, status_code=400)
        hits = search(q, page_size * pageno)[page_size * (pageno - 1):]
        base = str(request.base_url)
        results = []
        for position, hit in enumerate(hits, 1):
            url = _page_url(base, hit.document)
            parts = urlsplit(url)
            results.append({
                "url": url, "title": hit.document.title, "content": cap_text(hit.document.text, snippet_chars),
                "engine": ENGINE, "engines": [ENGINE], "positions": [position], "score": float(hit.score),
                "category": "general", "template": "default.html", "parsed_url": [parts.scheme, parts.netloc, parts.path, "", "", ""],
                "publishedDate": None, "thumbnail": "", "img_src": "", "priority": "",
            })
        return {"query": q, "number_of_results": len(results), "results": results, "answers": [], "corrections": [],
                "infoboxes": [], "suggestions": [], "unresponsive_engines": []}

    @app.post("/search")
    async def serper_search(request: Request):
        sent = request.headers.get("x-api-key")
        key_ok = None if sent is None else (state.api_key is None or hmac.compare_digest(sent, state.api_key))
        try:
            body = await request.json()
        except ValueError:
            body = None
        query = body.get("q") if isinstance(body, dict) else None
        fault = state.next_fault()
        state.record(RecordedRequest("POST", "/search", query, time.monotonic(), key_ok, fault))
        # The blocking parts (an injected delay, the index) run in the thread pool, like a `def` route.
        return await run_in_threadpool(serper_answer, request, body, key_ok, fault)

    def serper_answer(request: Request, body: Any, key_ok: bool | None, fault: Fault | None) -> Any:
        failed = apply_fault(fault, {"message": "Internal server error.", "statusCode": fault.status if fault else 500})
        if failed is not None:
            return failed
        if state.api_key is not None and not key_ok:
            return JSONResponse({"message": "Unauthorized.", "statusCode": 403}, status_code=403)
        if not isinstance(body, dict) or not isinstance(body.get("q"), str) or not body["q"].strip():
            return JSONResponse({"message": 'Body must be JSON like {"q": "query", "num": 10}.', "statusCode": 400}, status_code=400)
        num, page = body.get("num", 10), body.get("page", 1)
        if not isinstance(num, int) or not 1 <= num <= 100 or not isinstance(page, int) or page < 1:
            return JSONResponse({"message": "num must be 1..100 and page >= 1.", "statusCode": 400}, status_code=400)
        hits = search(body["q"], num * page)[num * (page - 1):]
        base = str(request.base_url)
        organic = [
            {"title": h.document.title, "link": _page_url(base, h.document),
             "snippet": cap_text(h.document.text, snippet_chars), "position": position}
            for position, h in enumerate(hits, 1)
        ]
        return {"searchParameters": {"q": body["q"], "type": "search", "num": num, "page": page, "engine": ENGINE},
                "organic": organic, "credits": 1}

    @app.get("/page/{doc_id:path}")
    def page(doc_id: str):
        state.record(RecordedRequest("GET", f"/page/{doc_id}", None, time.monotonic()))
        doc = by_id.get(doc_id)
        if doc is None:
            return HTMLResponse("<!doctype html><title>404 Not Found</title><h1>Not Found</h1>", status_code=404)
        return HTMLResponse(render_page(doc, [d for d in by_title[doc.title] if d.id != doc.id]))

    @app.post("/_control/faults")
    async def queue_faults(request: Request):
        try:
            faults = [Fault.from_dict(f) for f in (await request.json())["faults"]]
        except (ValueError, KeyError, TypeError) as e:
            return JSONResponse({"error": f'body must be {{"faults": [{{"delay_s", "status", "body", "retry_after"}}, ...]}} ({e})'}, status_code=422)
        with state.lock:
            state.faults.extend(faults)
        return {"queued": len(state.faults)}

    @app.get("/_control/requests")
    def list_requests():
        with state.lock:
            return {"requests": [asdict(r) for r in state.requests]}

    @app.post("/_control/reset")
    def reset():
        with state.lock:
            state.faults.clear()
            state.requests.clear()
        return {"reset": True}

    return app


class LocalSearchServer:
    """The app served by uvicorn in a daemon thread; a context manager that stops it."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0, *, start_timeout_s: float = 30.0):
        import uvicorn

        self.app = app
        self.state: ServerState = app.state.search
        self._sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._sock.bind((host, port))  # port 0: the OS picks a free one, no race with other processes
        except OSError as e:
            self._sock.close()
            raise OSError(f"cannot bind the local search server to {host}:{port} ({e}); choose another port, or 0 for a free one") from None
        self._sock.listen(128)
        bound = self._sock.getsockname()[1]
        self.url = f"http://[{host}]:{bound}" if ":" in host else f"http://{host}:{bound}"
        config = uvicorn.Config(app, log_config=None, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, name="webqa-search-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + start_timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the local search server at {self.url} did not start within {start_timeout_s:.0f} s")
            time.sleep(0.01)

    def inject(self, *faults: Fault) -> None:
        """Queue faults; each later search request takes the next one."""
        with self.state.lock:
            self.state.faults.extend(faults)

    def reset(self) -> None:
        with self.state.lock:
            self.state.faults.clear()
            self.state.requests.clear()

    @property
    def requests(self) -> list[RecordedRequest]:
        with self.state.lock:
            return list(self.state.requests)

    def search_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == "/search"]

    def stop(self) -> None:
        self.state.stopping.set()
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self._sock.close()

    def __enter__(self) -> "LocalSearchServer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"LocalSearchServer({self.url!r}, alive={self._thread.is_alive()})"


def start_local_search_server(
    corpus: str | Path | None = None,
    *,
    documents: Sequence[Document] | None = None,
    index: Retriever | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    api_key: str | None = None,
    searxng_json: bool = True,
    page_size: int = 10,
    snippet_chars: int = 160,
) -> LocalSearchServer:
    """Serve a corpus JSONL (its BM25 index is cached beside it) or `documents` (indexed in
    memory, or by the given `index` whose hits they are). `api_key`: the X-API-KEY that POST
    /search requires (None: any)."""
    if index is None:
        if corpus is not None:
            from ..retrieval.index import build_or_load_index

            index = build_or_load_index(corpus, "bm25")
        elif documents is not None:
            from ..retrieval.bm25 import BM25Index

            index = BM25Index.build(documents)
        else:
            raise ValueError("start_local_search_server needs a corpus path, documents, or an index")
    if documents is None:
        documents = getattr(index, "documents", None)
        if documents is None:
            documents = list(read_corpus_jsonl(corpus)) if corpus is not None else None
        if documents is None:
            raise ValueError("pass documents= with an index that does not expose .documents")
    state = ServerState(api_key=api_key, searxng_json=searxng_json)
    app = create_search_app(index, documents, state, page_size=page_size, snippet_chars=snippet_chars)
    return LocalSearchServer(app, host, port)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    parser = argparse.ArgumentParser(prog="python -m envs.webqa.server", description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", default=None, help="corpus JSONL (Search-R1 format); default: the generated world's (seed 0)")
    parser.add_argument("--world-size", default="default", help="size of the generated world when no --corpus is given")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; there is no authentication)")
    parser.add_argument("--port", type=int, default=8888, help="port (default 8888; 0 picks a free one)")
    parser.add_argument("--api-key-env", default=None, help="environment variable holding the X-API-KEY that POST /search requires")
    parser.add_argument("--page-size", type=int, default=10, help="results per SearXNG page (default 10)")
    parser.add_argument("--snippet-chars", type=int, default=160, help="snippet length (default 160)")
    args = parser.parse_args(argv)
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            print(f"search server: error: the environment variable {args.api_key_env} is not set", file=sys.stderr)
            return 1
    try:
        if args.corpus is None:
            from ..data import generate_world

            world = generate_world(seed=0, size=int(args.world_size) if args.world_size.isdigit() else args.world_size)
            server = start_local_search_server(documents=world.documents, host=args.host, port=args.port, api_key=api_key,
                                               page_size=args.page_size, snippet_chars=args.snippet_chars)
        else:
            server = start_local_search_server(args.corpus, host=args.host, port=args.port, api_key=api_key,
                                               page_size=args.page_size, snippet_chars=args.snippet_chars)
    except (OSError, ValueError, RuntimeError) as e:
        print(f"search server: error: {e}", file=sys.stderr)
        return 1
    print(f"search server at {server.url} (SearXNG: GET /search?format=json; Serper-style: POST /search)", file=sys.stderr, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
