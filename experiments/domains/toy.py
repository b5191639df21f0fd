"""Toy single-turn tasks (envs/toy.py) for smoke and learning tests of the training stack."""

from __future__ import annotations

from envs.toy import CharFractionEnv, ToyTask, toy_tasks

from .base import Domain


class ToyDomain(Domain):
    def tasks(self, split: str | None = None) -> dict[int, list[ToyTask]]:
        return {1: toy_tasks(self.config.env.num_tasks, self.config.env.target)}

    def make_env(self, n: int) -> CharFractionEnv:
        return CharFractionEnv()
