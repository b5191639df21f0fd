"""Web QA (envs/webqa): the QA domain's tasks answered by searching a web-search API.

Tasks are the QA domain's (the generated world or a task file, experiments.components.
task_sets); each episode is a `QAEnv` whose retriever is a `WebSearchRetriever` for
`env.provider` at `env.url`. With `env.url: null` the domain starts a local search server
(envs/webqa/server.py) on 127.0.0.1, or on this node's address on a multi-node Ray cluster,
over the world's corpus (or `retriever.corpus`), which speaks both wire formats, and stops
it on exit; Ray env runners get its URL (and the cache folder) through `worker_overrides`,
so they share it instead of starting their own.

Results are cached under `env.cache_dir`. Against a real API the default is
`<output_dir>/webqa-cache`, kept between runs: a rerun of the same evaluation sends no
request it already sent. Against the local server the default is a temporary folder removed
at exit, since cache keys hold the endpoint and the server gets a new port each run (its
entries could never be hit again). The prompt and few-shot demonstration are the QA
domain's (the protocol is the same).
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from envs import QAEnv, Task
from envs.webqa import WebSearchRetriever, make_web_retriever

from ..components import corpus_for, runner_host, task_sets
from .base import Domain

log = logging.getLogger(__name__)

CACHE_SUBDIR = "webqa-cache"


class WebQADomain(Domain):
    def __init__(self, config, retriever: WebSearchRetriever | None = None):
        super().__init__(config)
        self.retriever = retriever
        self.server = None  # the local search server, when this domain started one
        self.cache_dir: Path | None = None  # where results are cached (None: a retriever passed in)

    def _open(self) -> None:
        if self.retriever is not None:
            return
        env = self.config.env
        url = env.url
        self.cache_dir = Path(env.cache_dir) if env.cache_dir is not None else None
        if url is None:
            from envs.webqa import start_local_search_server

            corpus = corpus_for(self.config.data, self.config.retriever)
            # The local server requires the configured key, so the key path is exercised as with a real API.
            api_key = os.environ.get(env.api_key_env) if env.api_key_env else None
            self.server = self.stack.enter_context(start_local_search_server(corpus, host=runner_host(self.config), api_key=api_key))
            url = self.server.url
            log.info("local search server (SearXNG and Serper-style APIs) serving %s at %s", corpus, url)
            if self.cache_dir is None:
                self.cache_dir = Path(self.stack.enter_context(tempfile.TemporaryDirectory(prefix="webqa-cache-")))
        if self.cache_dir is None:
            self.cache_dir = Path(self.config.output_dir) / CACHE_SUBDIR
        self.retriever = make_web_retriever(
            env.provider, url, api_key_env=env.api_key_env, options=env.provider_options,
            timeout_s=env.timeout_s, retries=env.retries, backoff_s=env.backoff_s,
            rate_limit_per_s=env.rate_limit_per_s, cache_dir=self.cache_dir,
            fetch_pages=env.fetch_pages, page_chars=env.page_chars,
        )
        self.stack.callback(self.retriever.close)

    def tasks(self, split: str | None = None) -> dict[int, list[Task]]:
        return task_sets(self.config.data, split)

    def make_env(self, n: int) -> QAEnv:
        if self.retriever is None:
            raise RuntimeError("open the domain (with make_domain(config) as domain) before making envs")
        return QAEnv(self.retriever, self.config.env.qa_config(n))

    def worker_overrides(self) -> dict[str, str]:
        if self.server is None:
            return {}
        return {"env.url": self.server.url, "env.cache_dir": str(self.cache_dir)}
