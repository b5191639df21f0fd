"""Rollout records: an episode is a list of segments, and every turn names the segments it saw.

This is the one data structure the whole platform turns on (docs/architecture.md). A *segment* is a
run of token ids tokenized exactly once: the task prompt, one turn's generated text (internal
state + action), or one observation. A *turn* records the context it was sampled from as a
tuple of `SegmentRef`s (a segment, or a slice of one), the segment it generated and the
sampling log-probs of those tokens. Memory policies only choose references; the packer
rebuilds, from the same references, exactly the tokens and positions each turn attended to.

Token ids are the source of truth: nothing here is ever re-tokenized from text.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping

# Segment kinds. A new kind (a summary written by a separate call, retrieved notes) is a new
# string here; the packer and the accounting do not care which kind a segment is.
PROMPT = "prompt"
GENERATED = "generated"
OBSERVATION = "observation"
MEMORY_PROMPT = "memory_prompt"  # what a memory policy asks the model to write (policies/memory.py)

# Turn.info key of a model call a memory policy made itself (a summary, a note), not an env
# action: it is trained and packed like any turn, and left out of action counts.
MEMORY_CALL = "memory_call"


@dataclass(frozen=True)
class Segment:
    """A run of token ids, tokenized once, with the text it came from (for logs only)."""

    kind: str
    token_ids: tuple[int, ...]
    text: str = ""

    def __len__(self) -> int:
        return len(self.token_ids)


@dataclass(frozen=True)
class SegmentRef:
    """A reference to `segments[segment].token_ids[start:stop]` (`stop=None`: to the end).

    Slices exist so that a memory budget can cap the internal state of a reused generated
    segment without creating new token ids (which would break exact replay).
    """

    segment: int
    start: int = 0
    stop: int | None = None

    def bounds(self, segments: tuple[Segment, ...]) -> tuple[int, int]:
        n = len(segments[self.segment])
        stop = n if self.stop is None else min(self.stop, n)
        return min(self.start, stop), stop

    def token_ids(self, segments: tuple[Segment, ...]) -> tuple[int, ...]:
        start, stop = self.bounds(segments)
        return segments[self.segment].token_ids[start:stop]

    def length(self, segments: tuple[Segment, ...]) -> int:
        start, stop = self.bounds(segments)
        return stop - start


@dataclass(frozen=True)
class Turn:
    """One model call: what it saw, what it wrote, and what the environment answered."""

    context: tuple[SegmentRef, ...]
    generated: int  # index of the generated segment
    logp: tuple[float, ...]  # sampling log-prob of each generated token
    finish_reason: str  # "stop" (stop string), "eos", or "length"
    reward: float = 0.0
    observation: int | None = None  # index of the observation segment; None when the episode ended
    state_span: tuple[int, int] | None = None  # internal-state tokens inside the generated segment
    info: Mapping[str, Any] = field(default_factory=dict)  # the env's per-step info (action, valid, ...)


@dataclass(frozen=True)
class Episode:
    """A whole (or in-progress) episode: segments plus turns, both append-only."""

    task_id: str
    segments: tuple[Segment, ...]
    turns: tuple[Turn, ...] = ()
    done: bool = False
    info: Mapping[str, Any] = field(default_factory=dict)  # final scores (em, f1, ...), task metadata

    @classmethod
    def start(cls, task_id: str, prompt_ids: tuple[int, ...], prompt_text: str = "", /, **info: Any) -> Episode:
        return cls(task_id=task_id, segments=(Segment(PROMPT, tuple(prompt_ids), prompt_text),), info=info)

    def add_segment(self, segment: Segment) -> tuple[Episode, int]:
        return replace(self, segments=self.segments + (segment,)), len(self.segments)

    def add_turn(self, turn: Turn) -> Episode:
        return replace(self, turns=self.turns + (turn,))

    def finish(self, **info: Any) -> Episode:
        return replace(self, done=True, info={**self.info, **info})

    def context_ids(self, refs: tuple[SegmentRef, ...]) -> list[int]:
        """The token ids a model call sees for `refs` (what the sampler is given)."""
        ids: list[int] = []
        for ref in refs:
            ids.extend(ref.token_ids(self.segments))
        return ids

    @property
    def total_reward(self) -> float:
        return float(sum(t.reward for t in self.turns))


def action_turns(episode: Episode) -> list[Turn]:
    """The turns that acted in the env (every turn but a memory policy's own calls)."""
    return [t for t in episode.turns if MEMORY_CALL not in t.info]


def valid_action_rate(episode: Episode) -> float:
    turns = action_turns(episode)
    return sum(bool(t.info.get("valid")) for t in turns) / max(len(turns), 1)


@dataclass(frozen=True)
class TurnTokens:
    """Token accounting of one call: the MEM1 paper's memory proxy is context + generated."""

    context: int
    generated: int

    @property
    def total(self) -> int:
        return self.context + self.generated


def turn_tokens(episode: Episode) -> list[TurnTokens]:
    return [
        TurnTokens(
            context=sum(r.length(episode.segments) for r in t.context),
            generated=len(episode.segments[t.generated]),
        )
        for t in episode.turns
    ]


def memory_metrics(episode: Episode, kv_bytes_per_token: int | None = None) -> dict[str, float]:
    """Per-episode memory metrics (docs/memory_policies.md): peak and mean tokens per call, the dependency
    span (how many distinct earlier tokens the episode's calls attended to, summed), and the
    KV-cache bytes implied by the peak when the model's shape is known."""
    calls = turn_tokens(episode)
    if not calls:
        return {"peak_tokens": 0.0, "mean_tokens": 0.0, "peak_context_tokens": 0.0, "attention_span": 0.0}
    out = {
        "peak_tokens": float(max(c.total for c in calls)),
        "mean_tokens": sum(c.total for c in calls) / len(calls),
        "peak_context_tokens": float(max(c.context for c in calls)),
        # Sum over calls of the attention span of the call's last token: the cost of
        # attention over the episode grows with this, linearly for MEM1 and quadratically
        # in the number of turns for full context.
        "attention_span": float(sum(c.total for c in calls)),
    }
    if kv_bytes_per_token:
        out["peak_kv_bytes"] = out["peak_tokens"] * kv_bytes_per_token
    return out
