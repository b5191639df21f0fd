"""Questions and composed multi-objective tasks (docs/method.md, "Composed multi-objective tasks").

A `QAItem` is one question with its acceptable answers. A `Task` is what an episode plays:
N questions joined into one N-objective prompt, each objective with its own gold list.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence


@dataclass(frozen=True)
class QAItem:
    id: str
    question: str
    answers: tuple[str, ...]  # acceptable gold strings (aliases included)
    source: str = ""  # "world", "hotpotqa", "nq", ...
    hops: int = 1

    def __post_init__(self):
        if not self.question.strip():
            raise ValueError(f"QA item {self.id!r}: empty question")
        if not self.answers:
            raise ValueError(f"QA item {self.id!r}: no gold answers")


@dataclass(frozen=True)
class Task:
    id: str
    questions: tuple[str, ...]
    answers: tuple[tuple[str, ...], ...]  # one gold list per question, in question order
    source: str = ""
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if len(self.questions) != len(self.answers):
            raise ValueError(f"task {self.id!r}: {len(self.questions)} questions but {len(self.answers)} answer lists")
        if not self.questions:
            raise ValueError(f"task {self.id!r}: no questions")

    @property
    def num_objectives(self) -> int:
        return len(self.questions)

    @property
    def question_text(self) -> str:
        """'q1?; q2?; ...' with a '?' appended to each question that lacks one (as the MEM1 reference does)."""
        return "; ".join(q.strip() if q.strip().endswith("?") else q.strip() + "?" for q in self.questions)


def compose_tasks(items: Sequence[QAItem], n: int, num_tasks: int, *, seed: int = 0, prefix: str = "") -> list[Task]:
    """`num_tasks` tasks of `n` distinct questions each, drawn without repetition inside a
    task (and across tasks while the pool lasts), deterministically from `seed`."""
    if n < 1:
        raise ValueError(f"number of objectives must be >= 1, got n={n}")
    if len(items) < n:
        raise ValueError(f"cannot compose {n}-objective tasks from {len(items)} questions")
    rng = random.Random(f"{seed}:{n}")
    pool: list[QAItem] = []
    tasks = []
    for i in range(num_tasks):
        if len(pool) < n:
            pool = list(items)
            rng.shuffle(pool)
        chosen, pool = pool[:n], pool[n:]
        tasks.append(
            Task(
                id=f"{prefix}n{n}-{i}",
                questions=tuple(it.question for it in chosen),
                answers=tuple(it.answers for it in chosen),
                source=chosen[0].source,
                meta={"item_ids": [it.id for it in chosen], "hops": [it.hops for it in chosen]},
            )
        )
    return tasks
