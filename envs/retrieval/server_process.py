"""Run the retrieval server (envs/retrieval/server.py) as a background subprocess.

    server = start_server_process("corpus.jsonl", index="bm25", port=0)   # 0: a free port
    retriever = HttpRetriever(server.url)
    ...
    server.stop()            # or: with start_server_process(...) as server: ...

The child is `python -m envs.retrieval.server`, so the parent never imports FastAPI or the
index. The child binds the port itself and writes its URL to a file once it listens
(picking a free port in the parent and handing it over would race with other processes);
the parent then waits for GET /health. If the child dies first, the error carries the
tail of its log. The child stops when this process exits, even without `stop()`.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import requests

if TYPE_CHECKING:  # the parent needs only its fields, not faiss
    from .dense import FaissOptions

_REPO_ROOT = Path(__file__).resolve().parents[2]  # so the child imports this same source tree


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class RetrieverServer:
    """A running server subprocess: its `url`, `process` and `log_path`."""

    def __init__(self, process: subprocess.Popen, url: str, log_path: Path, temp_dir: Path | None):
        self.process = process
        self.url = url
        self.log_path = log_path
        self._temp_dir = temp_dir

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (uvicorn shuts down gracefully), then SIGKILL after `timeout` seconds."""
        if self.alive:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._temp_dir is not None:  # a log the caller did not ask to keep
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None

    def log_tail(self, lines: int = 30) -> str:
        return _tail(self.log_path, lines)

    def __enter__(self) -> "RetrieverServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"RetrieverServer(url={self.url!r}, pid={self.process.pid}, alive={self.alive})"


def start_server_process(
    corpus: str | Path,
    index: str = "bm25",
    host: str = "127.0.0.1",
    port: int = 0,
    cache_dir: str | Path | None = None,
    *,
    timeout: float | None = 600.0,
    log_path: str | Path | None = None,
    extra_args: Sequence[str] = (),
    faiss_options: "FaissOptions | None" = None,
) -> RetrieverServer:
    """Start the server and return once /health answers. `timeout` (seconds; None: as long
    as the child lives) covers building the index on a first run: BM25 takes seconds, but a
    dense index encodes about 1,000 tokens/s on a small CPU, so build a big corpus's index
    beforehand with `build_or_load_index` (the server then loads it from the cache).
    `log_path` keeps the child's output; by default it goes to a temporary file removed by
    `stop()`. `extra_args` are more server options (e.g. ["--max-topk", "50"]).
    `faiss_options` shape a dense or hybrid index; None: the server's defaults (exact Flat)."""
    temp_dir = Path(tempfile.mkdtemp(prefix="mem1-retriever-"))
    ready_file = temp_dir / "ready.json"
    log_file = Path(log_path) if log_path is not None else temp_dir / "server.log"
    command = [
        sys.executable, "-m", "envs.retrieval.server",
        "--corpus", str(corpus), "--index", index, "--host", host, "--port", str(port),
        "--ready-file", str(ready_file), "--exit-with-parent",
    ]
    if cache_dir is not None:
        command += ["--cache-dir", str(cache_dir)]
    if faiss_options is not None:
        command += ["--faiss-index", faiss_options.factory, "--faiss-train-size", str(faiss_options.train_size)]
        if faiss_options.search_k is not None:
            command += ["--faiss-search-k", str(faiss_options.search_k)]
    command += list(extra_args)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    with open(log_file, "ab") as log_stream:
        process = subprocess.Popen(command, stdout=log_stream, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    server = RetrieverServer(process, url="", log_path=log_file, temp_dir=temp_dir)

    try:
        _wait_until_ready(server, ready_file, timeout, command)
    except BaseException:  # not ready, died, or interrupted: never leave a half-started child
        server.stop()
        raise
    return server


def _wait_until_ready(server: RetrieverServer, ready_file: Path, timeout: float | None, command: list[str]) -> None:
    deadline = math.inf if timeout is None else time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.alive:
            raise RuntimeError(
                f"the retriever server exited with code {server.process.returncode} before it was ready "
                f"(command: {' '.join(command)}); last lines of its log:\n{server.log_tail()}"
            )
        if not server.url and ready_file.is_file():
            server.url = json.loads(ready_file.read_text())["url"]
        if server.url:
            try:
                if requests.get(f"{server.url}/health", timeout=2.0).status_code == 200:
                    return
            except requests.RequestException:
                pass  # not serving yet
        time.sleep(0.1)
    raise TimeoutError(f"the retriever server was not ready after {timeout:.0f} s; last lines of its log:\n{server.log_tail()}")
