"""The domain contract (see the package docstring)."""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from typing import Any

from envs import TextEnv


class Domain(ABC):
    """Tasks and envs of one kind. Subclasses start services in `_open` (registering their
    cleanup on `self.stack`) and implement `tasks` and `make_env`."""

    group_key = "n"  # what the N axis means in reports (objectives per task)

    def __init__(self, config: Any):
        self.config = config
        self.stack = contextlib.ExitStack()

    def __enter__(self) -> "Domain":
        try:
            self._open()
        except BaseException:
            self.stack.close()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stack.close()

    def _open(self) -> None:
        """Start the services the envs need (default: none)."""

    @abstractmethod
    def tasks(self, split: str | None = None) -> dict[int, list[Any]]:
        """Tasks by N; every task has a string `id`."""

    @abstractmethod
    def make_env(self, n: int) -> TextEnv:
        """A fresh env for one episode of an N-objective task."""

    def expert(self) -> Any:
        """A scripted expert (an object with `act(context_text) -> str`) that demonstrates
        the tasks for supervised fine-tuning (experiments/traces.py); None if the domain has none."""
        return None

    def worker_overrides(self) -> dict[str, Any]:
        """Dotted config overrides (e.g. {"retriever.url": ...}) that point workers (Ray
        env runners) at the services this domain started, instead of starting their own."""
        return {}
