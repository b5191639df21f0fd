"""Multi-objective QA over a retriever (envs/qa.py), on the generated world or real data."""

from __future__ import annotations

from envs import QAEnv, Task

from ..components import LOOPBACK, corpus_for, open_retriever, runner_host, task_sets, world_size
from .base import Domain


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
