"""Memory policies: which earlier segments form the model's context before each turn.

This choice is the only thing that differs between the agents the platform compares
(docs/memory_policies.md). A policy reads an in-progress `Episode` and returns `SegmentRef`s; it never
creates tokens, so every policy replays exactly in the packer.

| policy          | context of turn t                                            |
| --------------- | ------------------------------------------------------------ |
| `mem1`          | prompt, turn t-1's generated segment, turn t-1's observation |
| `full_context`  | prompt and every earlier segment                             |
| `window(k)`     | prompt and the last k turns                                  |
| `summary`       | prompt, the latest summary, the last observation             |
| `amem(k)`       | prompt, the latest note, the top-k earlier notes + last obs. |

`budget=B` (any policy) caps the internal state of each reused generated segment at B
tokens: the state's first B tokens are kept, then the action that follows the state.
For `summary` the whole summary is the state; for `amem` B caps the retrieved notes.

`summary` and `amem` write their memory with the model, in a call of their own after each
observation (`before_turn`, which the rollout loop calls for all live episodes at once, so
it is one batched call). That call is recorded as a turn (`MEMORY_CALL` in its info): its
tokens are generated tokens, trained and packed like the action's.
"""

from __future__ import annotations

import inspect
import re
from abc import ABC, abstractmethod
from dataclasses import replace
from typing import Any, Callable, ClassVar, Sequence

from .records import GENERATED, MEMORY_CALL, MEMORY_PROMPT, OBSERVATION, Episode, Segment, SegmentRef, Turn


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


class WrittenMemory(MemoryPolicy):
    """A memory the model writes in a separate call after each observation (a summary, a
    note). The call sees what the action saw, the action, then the observation with
    `instruction`; what it writes is followed by `carried` (a user message), and the next
    action sees the prompt, the written memory and the carried message."""

    instruction: ClassVar[str]

    def context(self, episode: Episode) -> tuple[SegmentRef, ...]:
        last = max((i for i, t in enumerate(episode.turns) if MEMORY_CALL in t.info), default=-1)
        refs = (SegmentRef(0),)
        # the latest written memory, then any turns since it (there are none unless a memory
        # call did not fit the model and was skipped)
        for turn in episode.turns[max(last, 0):]:
            refs += self._turn_refs(episode, turn)
        return refs

    def before_turn(self, episodes: Sequence[Episode], *, generate: Callable | None = None, chat=None, params=None,
                    seeds: Sequence[int] | None = None, max_model_len: int | None = None, **resources: Any) -> list[Episode]:
        if generate is None or chat is None or params is None:
            raise TypeError(f"memory policy {self.spec!r} writes its memory with the model: before_turn needs generate, chat and params")
        out = list(episodes)
        calls, prompts = [], []
        for i, ep in enumerate(episodes):
            if not ep.turns or MEMORY_CALL in ep.turns[-1].info or ep.turns[-1].observation is None:
                continue  # nothing new to write about
            action = ep.turns[-1]
            observation = ep.segments[action.observation].text
            asked = chat.observation_ids(f"{observation}\n\n{self.instruction}", ep.segments[action.generated].token_ids)
            ep, ask = ep.add_segment(Segment(MEMORY_PROMPT, asked, self.instruction))
            context = action.context + (SegmentRef(action.generated), SegmentRef(ask))
            ids = ep.context_ids(context)
            if max_model_len is not None and len(ids) + params.max_new_tokens > max_model_len:
                continue  # the next action then sees the unwritten turn itself, or ends as truncated
            out[i] = ep
            calls.append((i, context, observation))
            prompts.append(ids)
        if not calls:
            return out
        # the written memory ends where the model ends its message: the env's stop strings
        # (end of an action) do not apply to it
        completions = generate(prompts, replace(params, stop=()), [seeds[i] for i, _, _ in calls] if seeds else None)
        for (i, context, observation), c in zip(calls, completions):
            ep, written = out[i].add_segment(Segment(GENERATED, tuple(c.token_ids), c.text))
            text = self.carried(ep, c.text, observation, chat, **resources)
            ep, carried = ep.add_segment(Segment(OBSERVATION, chat.observation_ids(text, c.token_ids), text))
            out[i] = ep.add_turn(Turn(context=context, generated=written, logp=tuple(c.logp), finish_reason=c.finish_reason,
                                      observation=carried, state_span=self.state_span(len(c.token_ids)),
                                      info={MEMORY_CALL: self.name}))
        return out

    def state_span(self, length: int) -> tuple[int, int] | None:
        """The part of the written memory that `budget` caps when the next action sees it."""
        return None

    def carried(self, episode: Episode, written: str, observation: str, chat, **resources: Any) -> str:
        """The user message after the written memory, which the next action sees."""
        return observation


class Summary(WrittenMemory):
    """A summarising agent (ReSum-like): after each observation the model rewrites one summary
    of the previous summary and the new result; the next action sees the prompt, the summary
    and the last observation. `budget` caps the summary the next action sees."""

    name = "summary"
    instruction = ("Before your next step, write a summary for yourself: every fact and answer found so far "
                   "(from your previous summary and this result) that the questions need, and nothing else. "
                   "Write only the summary.")

    def state_span(self, length: int) -> tuple[int, int]:
        return (0, length)


class Notes(WrittenMemory):
    """A-MEM-like notes: after each observation the model writes a short note into a store of
    the episode's notes; the next action sees the prompt, the new note, and the k earlier
    notes that best match it (BM25, through the `search_notes` resource the rollout loop
    passes) followed by the last observation. Retrieval is recorded as a segment, so replay
    is exact. `budget` caps the retrieved notes' tokens."""

    name = "amem"
    instruction = ("Before your next step, write one short note for yourself about this result: the facts it gives "
                   "that the questions need. Write only the note.")

    def __init__(self, k: int = 3, budget: int | None = None):
        super().__init__(budget)
        if k < 1:
            raise ValueError(f"amem retrieves at least 1 note, got k={k}")
        self.k = k

    @property
    def spec(self) -> str:
        return f"amem(k={self.k})" + (f",budget={self.budget}" if self.budget else "")

    def carried(self, episode: Episode, written: str, observation: str, chat, *, search_notes: Callable | None = None, **resources: Any) -> str:
        if search_notes is None:
            raise TypeError("memory policy 'amem' needs the search_notes resource (BM25 over the episode's notes)")
        earlier = [episode.segments[t.generated].text for t in episode.turns if t.info.get(MEMORY_CALL) == self.name]
        picked, used = [], 0
        for j in search_notes(earlier, written, self.k) if earlier else []:  # best match first
            cost = len(chat.encode(earlier[j]))
            if self.budget is not None and used + cost > self.budget:
                break
            picked.append(j)
            used += cost
        lines = [f"- {earlier[j]}" for j in sorted(picked)]  # shown oldest first, as they were written
        notes = "Your earlier notes:\n" + "\n".join(lines) + "\n\n" if lines else ""
        return notes + observation


MEMORY_POLICIES: dict[str, type[MemoryPolicy]] = {p.name: p for p in (Mem1, FullContext, Window, Summary, Notes)}

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
