"""Turning env strings into segments of token ids, with the tokenizer's own chat template.

The prompt segment is the chat template's rendering of the task as a user message, ending
with the assistant header (`add_generation_prompt=True`). Generated segments are the
sampler's ids, untouched. Observation segments come in two layouts:

- `chat` (default, for instruct models): the observation is a new user message. Its ids are
  the template's own glue between an assistant message and the next user message, the
  observation, then the glue that opens the next assistant message. The glue is found once
  by rendering a conversation with placeholders, so any template works (ChatML, Llama 3,
  ...) without hand-written special tokens.
- `inline` (the MEM1 reference, for base models): the observation is appended to the
  assistant's running text, between blank lines.

Either way each segment is tokenized exactly once and contexts are concatenations of ids,
so what the sampler saw is what the learner replays.
"""

from __future__ import annotations

from typing import Sequence

_ASSISTANT = "\x00ASSISTANT\x00"
_USER = "\x00USER\x00"


class ChatFormat:
    def __init__(self, tokenizer, mode: str = "chat", system_prompt: str | None = None):
        if mode not in ("chat", "inline"):
            raise ValueError(f"chat mode {mode!r}: allowed 'chat' or 'inline'")
        if mode == "chat" and not getattr(tokenizer, "chat_template", None):
            raise ValueError("the tokenizer has no chat template; use chat mode 'inline' for base models")
        self.tokenizer = tokenizer
        self.mode = mode
        self.system_prompt = system_prompt
        if mode == "chat":
            self._before, self._after = self._observation_glue()
            # A generation that ended with the end-of-turn token (a special token, which the
            # glue opens with) already closed the message: the glue's copy is left out.
            self._special = set(tokenizer.all_special_ids)

    def _messages(self, user: str, demonstration: Sequence[tuple[str, str]] = ()) -> list[dict[str, str]]:
        system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        demo = [{"role": role, "content": text} for role, text in demonstration]
        return system + demo + [{"role": "user", "content": user}]

    def _render(self, messages: list[dict[str, str]], generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)

    def _observation_glue(self) -> tuple[str, str]:
        text = self._render(
            self._messages("task") + [{"role": "assistant", "content": _ASSISTANT}, {"role": "user", "content": _USER}],
            generation_prompt=True,
        )
        if _ASSISTANT not in text or _USER not in text:
            raise ValueError("the chat template drops message contents; use chat mode 'inline'")
        between = text.split(_ASSISTANT, 1)[1]
        before, after = between.split(_USER, 1)
        return before, after

    def encode(self, text: str) -> tuple[int, ...]:
        return tuple(self.tokenizer.encode(text, add_special_tokens=False))

    def prompt_ids(self, user_text: str, demonstration: Sequence[tuple[str, str]] = ()) -> tuple[int, ...]:
        """The task prompt, after an optional few-shot `demonstration` of (role, text) turns
        (user turns are the env's prompts and observations, assistant turns model outputs)."""
        if self.mode == "inline":
            bos = [self.tokenizer.bos_token_id] if self.tokenizer.bos_token_id is not None else []
            demo = "".join(
                text if role == "assistant" else text + "\n" if i == 0 else f"\n\n{text}\n\n"
                for i, (role, text) in enumerate(demonstration)
            )
            return tuple(bos) + self.encode(demo + ("\n\n" if demo else "") + user_text + "\n")
        return self.encode(self._render(self._messages(user_text, demonstration), generation_prompt=True))

    def observation_ids(self, text: str, after: Sequence[int] = ()) -> tuple[int, ...]:
        """Ids of an observation that follows the generated ids `after`."""
        if self.mode == "inline":
            return self.encode(f"\n\n{text}\n\n")
        ids = self.encode(self._before + text + self._after)
        if after and ids and ids[0] == after[-1] and ids[0] in self._special:
            ids = ids[1:]
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)

    def char_to_token(self, ids: Sequence[int], char: int) -> int:
        """Number of leading tokens whose decoded text covers `char` characters (binary search
        on prefix decodes; used to map the env's character spans onto token spans)."""
        lo, hi = 0, len(ids)
        while lo < hi:
            mid = (lo + hi) // 2
            if len(self.decode(ids[:mid])) >= char:
                hi = mid
            else:
                lo = mid + 1
        return lo
