"""Multi-objective QA over a retriever (envs/qa.py), on the generated world or real data."""

from __future__ import annotations

import logging
import sys

from envs import QAEnv, Task

from ..components import corpus_for, open_retriever, task_sets, world_size
from .base import Domain

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"


def service_host() -> str:
    """Where a server this job starts for its env runners binds: loopback, unless this
    process is on a Ray cluster of several nodes; then this node's address, since a runner
    on another node cannot reach 127.0.0.1 here (the URL it gets would fail on every
    search). Checked when the domain opens: an autoscaling cluster that has only its head
    then needs `retriever.mode: ray` or a `retriever.url` instead."""
    ray = sys.modules.get("ray")  # not imported: no cluster to join, and no import to pay for
    if ray is None or not ray.is_initialized():
        return LOOPBACK
    nodes = sum(1 for n in ray.nodes() if n["Alive"])
    if nodes < 2:
        return LOOPBACK
    host = ray.util.get_node_ip_address()
    log.info("Ray cluster of %d nodes: the server for env runners binds %s, this node's address", nodes, host)
    return host


def runner_host(config) -> str:
    """`service_host()` for a job with env runner actors, else loopback: the driver alone
    reaches 127.0.0.1, and the servers have no authentication to expose."""
    runners = getattr(getattr(config, "training", None), "num_env_runners", 0)
    return service_host() if runners > 0 else LOOPBACK


class QADomain(Domain):
    def __init__(self, config, retriever=None):
        super().__init__(config)
        self.retriever = retriever
        self._url: str | None = None

    def _open(self) -> None:
        if self.retriever is None:
            corpus = corpus_for(self.config.data, self.config.retriever)
            section = self.config.retriever
            host = runner_host(self.config) if section.mode == "http" and not section.url else LOOPBACK
            self.retriever = self.stack.enter_context(open_retriever(section, corpus, host=host))
        self._url = getattr(self.retriever, "url", None)

    def tasks(self, split: str | None = None) -> dict[int, list[Task]]:
        return task_sets(self.config.data, split)

    def make_env(self, n: int) -> QAEnv:
        return QAEnv(self.retriever, self.config.env.qa_config(n))

    def expert(self):
        """The scripted expert of the generated world (loaded data has no entity links)."""
        if self.config.data.source != "world":
            return None
        from envs.data import generate_world
        from envs.data.expert import QAExpert

        return QAExpert(generate_world(seed=self.config.data.world_seed, size=world_size(self.config.data.world_size)))

    def worker_overrides(self) -> dict[str, str]:
        return {"retriever.url": self._url} if self._url else {}
