"""The text-environment contract: Gymnasium's reset/step, with strings in and strings out.

    obs, info = env.reset(options={"task": task})      # obs: the task prompt (user message)
    obs, reward, terminated, truncated, info = env.step(model_text)

`terminated` means the task ended (an answer, a purchase); `truncated` means the turn budget
ran out. Envs never raise on what the model wrote: malformed text gets a corrective
observation (and the env's format penalty) and the episode goes on. An env never imports
`policies`: it knows nothing of tokens, memory or samplers.

Every env exposes `stop_strings`: generation stops at the first of them (the closing action
tags), and everything after is cut by the sampler on a token boundary.

`reset`'s info may carry "demonstration": ((role, text), ...), a worked exchange the agent
is shown before the task (few-shot); the chat template renders it as earlier turns.

`step`'s info carries at least:
- "action": the action kind ("search", "answer", "click", "buy", or "invalid"),
- "valid": whether the text followed the protocol,
- "state_span": (start, end) character offsets of the internal state in the text, or None.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any


class TextEnv(ABC):
    stop_strings: tuple[str, ...] = ()

    @abstractmethod
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        """Start an episode; `options["task"]` is the task to play."""

    @abstractmethod
    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        """Apply the model's text; return (observation, reward, terminated, truncated, info)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        pass
