"""A sampler whose "model" is a function of the decoded context: scripted experts.

    sampler = ScriptedSampler(expert.act, tokenizer)   # act(context_text) -> the turn's text
    episodes = rollout(requests, sampler, chat, params)  # the same loop as a real model

The expert sees exactly what a model would: the context the memory policy chose, decoded.
Under `mem1` that is the prompt, its own previous turn and the last observation, so an
expert that still solves the task proves its internal states carry everything needed.
Its text is tokenized once, here, so its episodes hold real token ids and pack (and
replay, and fine-tune) exactly like sampled ones. Log-probs are 0: a script has no
distribution, and supervised fine-tuning does not use them.

Hand-written because no library turns a text policy into a token-level sampler.
"""

from __future__ import annotations

from typing import Callable, Sequence

from .base import Completion, Sampler, SamplingParams, Weights, check_prompts, refuse_adapters
from .stops import finish_completion

Act = Callable[[str], str]


class ScriptedSampler(Sampler):
    """`act(context_text) -> str` as a `Sampler`. `max_new_tokens` and stop strings apply as
    for a model: the ids are capped, then cut after the first stop string."""

    def __init__(self, act: Act, tokenizer):
        self.act = act
        self.tokenizer = tokenizer
        eos = tokenizer.eos_token_id
        self.eos_token_ids = frozenset([eos] if eos is not None else [])

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        params: SamplingParams = SamplingParams(),
        seeds: Sequence[int | None] | None = None,
        adapters: Sequence[str] | None = None,
    ) -> list[Completion]:
        refuse_adapters(self, adapters)
        out = []
        for ids in check_prompts(prompts, seeds, len(self.tokenizer)):
            context = self.tokenizer.decode(ids, skip_special_tokens=False)
            token_ids = self.tokenizer.encode(self.act(context), add_special_tokens=False)[: params.max_new_tokens]
            # the backends' own end rule, so a stop string cuts the ids where a model's would
            out.append(finish_completion(token_ids, [0.0] * len(token_ids), self.tokenizer, params.stop, frozenset()))
        return out

    def load_weights(self, weights: Weights) -> None:
        raise TypeError("a scripted expert has no weights to load")
