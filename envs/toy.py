"""Toy text tasks: single-turn envs with exact, dense rewards, for smoke and learning tests
of the training stack on a tiny model in seconds.

`CharFractionEnv`: the reward is the fraction of the output's non-space characters that
belong to the task's target set (e.g. vowels). A random policy scores about the target's
share of the vocabulary, any working policy-gradient loss raises it within a few dozen
updates, and a broken one (wrong sign, advantages lost, no gradient) cannot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .base import TextEnv


@dataclass(frozen=True)
class ToyTask:
    id: str
    prompt: str
    target: str  # characters that earn reward


class CharFractionEnv(TextEnv):
    stop_strings: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.task: ToyTask | None = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        task = (options or {}).get("task")
        if not isinstance(task, ToyTask):
            raise ValueError("CharFractionEnv.reset needs options={'task': ToyTask}")
        self.task = task
        return task.prompt, {"task_id": task.id}

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if self.task is None:
            raise RuntimeError("call reset() before step()")
        chars = [c for c in action if not c.isspace()]
        reward = sum(c in self.task.target for c in chars) / len(chars) if chars else 0.0
        return "", reward, True, False, {"action": "answer", "valid": True, "state_span": None, "reward": reward, "success": float(reward >= 0.9)}


def toy_tasks(num_tasks: int, target: str) -> list[ToyTask]:
    return [ToyTask(id=f"toy-{i}", prompt=f"Task {i}: write a line of letters.", target=target) for i in range(num_tasks)]
