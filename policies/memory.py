"""Memory policies: which earlier segments form the model's context before each turn.

This choice is the only thing that differs between the agents the platform compares
(docs/memory_policies.md). A policy reads an in-progress `Episode` and returns `SegmentRef`s; it never
creates tokens, so every policy replays exactly in the packer.

| policy          | context of turn t                                            |
| --------------- | ------------------------------------------------------------ |
| `mem1`          | prompt, turn t-1's generated segment, turn t-1's observation |
| `full_context`  | prompt and every earlier segment                             |
| `window(k)`     | prompt and the last k turns                                  |

`budget=B` (any policy) caps the internal state of each reused generated segment at B
tokens: the state's first B tokens are kept, then the action that follows the state.

Policies that need extra model calls or stores (a `summary` written by a separate call,
A-MEM-like notes) add their own segments in `before_turn`, which the rollout loop calls for
all live episodes at once, and then reference them from `context`.
"""

from __future__ import annotations

import inspect
import re
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Sequence

from .records import Episode, SegmentRef, Turn


class MemoryPolicy(ABC):
    """Chooses the context of the next turn. Subclasses set `name` and implement `context`."""

    name: ClassVar[str]

    def __init__(self, budget: int | None = None):
        if budget is not None and budget < 1:
            raise ValueError(f"memory budget must be a positive number of tokens, got budget={budget}")
        self.budget = budget

    @abstractmethod
    def context(self, episode: Episode) -> tuple[SegmentRef, ...]:
        """References to the segments the next call sees, in order (the prompt first)."""

    def before_turn(self, episodes: Sequence[Episode], **resources: Any) -> list[Episode]:
        """Hook for policies that write extra segments (one batched call for all live
        episodes). The default adds nothing."""
        return list(episodes)

    @property
    def spec(self) -> str:
        """The policy as a string `make_memory_policy` parses back (used in logs and MLflow)."""
        return self.name + (f",budget={self.budget}" if self.budget else "")

    def _turn_refs(self, episode: Episode, turn: Turn) -> tuple[SegmentRef, ...]:
        """A past turn as context: its generated segment (state capped by the budget), then
        its observation."""
        refs: tuple[SegmentRef, ...]
        span = turn.state_span
        if self.budget is not None and span is not None and span[1] - span[0] > self.budget:
            refs = (SegmentRef(turn.generated, 0, span[0] + self.budget), SegmentRef(turn.generated, span[1]))
        else:
            refs = (SegmentRef(turn.generated),)
        if turn.observation is not None:
            refs += (SegmentRef(turn.observation),)
        return refs

    def _last_turns(self, episode: Episode, k: int | None) -> tuple[SegmentRef, ...]:
        turns = episode.turns if k is None else episode.turns[-k:]
        refs = (SegmentRef(0),)
        for turn in turns:
            refs += self._turn_refs(episode, turn)
        return refs


class Mem1(MemoryPolicy):
    """MEM1: the prompt, the latest internal state + action, and the latest observation."""

    name = "mem1"

    def context(self, episode: Episode) -> tuple[SegmentRef, ...]:
        return self._last_turns(episode, 1)


class FullContext(MemoryPolicy):
    """ReAct / Search-R1 style: every turn is appended, so context grows with the horizon."""

    name = "full_context"

    def context(self, episode: Episode) -> tuple[SegmentRef, ...]:
        return self._last_turns(episode, None)


class Window(MemoryPolicy):
    """Truncation baseline: the prompt and the last k turns (k=1 equals `mem1`'s layout, but
    a window agent is not trained or prompted to carry a cumulative state)."""

    name = "window"

    def __init__(self, k: int = 2, budget: int | None = None):
        super().__init__(budget)
        if k < 1:
            raise ValueError(f"window size must be at least 1 turn, got k={k}")
        self.k = k

    def context(self, episode: Episode) -> tuple[SegmentRef, ...]:
        return self._last_turns(episode, self.k)

    @property
    def spec(self) -> str:
        return f"window(k={self.k})" + (f",budget={self.budget}" if self.budget else "")


MEMORY_POLICIES: dict[str, type[MemoryPolicy]] = {p.name: p for p in (Mem1, FullContext, Window)}

_SPEC = re.compile(r"^\s*(?P<name>[a-z_0-9]+)\s*(?:\((?P<args>[^)]*)\))?\s*(?:,(?P<rest>.*))?$")


def make_memory_policy(spec: str | dict[str, Any] | MemoryPolicy) -> MemoryPolicy:
    """Build a policy from `"mem1"`, `"window(k=2)"`, `"window(3)"`, `"mem1,budget=256"`, or a
    dict such as `{"name": "window", "k": 2}`."""
    if isinstance(spec, MemoryPolicy):
        return spec
    if isinstance(spec, dict):
        kwargs = dict(spec)
        name = kwargs.pop("name", None)
        if name is None:
            raise ValueError(f"memory policy {spec!r} has no 'name'; allowed: {sorted(MEMORY_POLICIES)}")
    else:
        m = _SPEC.match(spec)
        if not m:
            raise ValueError(f"cannot parse memory policy {spec!r}; write e.g. 'mem1', 'window(k=2)', 'mem1,budget=256'")
        name, kwargs = m["name"], {}
        args = [a for a in (m["args"] or "").split(",") + (m["rest"] or "").split(",") if a.strip()]
        for i, arg in enumerate(args):
            key, _, value = arg.partition("=")
            if not _:  # positional: window(3) means k=3
                key, value = ("k" if i == 0 else f"arg{i}"), key
            kwargs[key.strip()] = int(value) if value.strip().lstrip("-").isdigit() else value.strip()
    if name not in MEMORY_POLICIES:
        raise ValueError(f"unknown memory policy {name!r}; allowed: {sorted(MEMORY_POLICIES)}")
    cls = MEMORY_POLICIES[name]
    allowed = [p for p in inspect.signature(cls).parameters if p != "self"]
    unknown = sorted(set(kwargs) - set(allowed))
    try:
        if unknown:
            raise TypeError(f"unexpected {', '.join(unknown)}")
        return cls(**kwargs)
    except TypeError as e:  # unknown names, positional extras, or values of the wrong type
        raise ValueError(f"bad arguments {kwargs} for memory policy {name!r} ({e}); allowed: {allowed}") from None
