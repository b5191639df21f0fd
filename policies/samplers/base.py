"""The sampler contract: token-id prompts in, `Completion`s (ids, sampling log-probs, text,
finish reason) out, with in-place weight sync. Two backends implement it: `TransformersSampler`
(batched `generate`, any device, the CPU default) and `VLLMSampler` (the GPU default).

    sampler = make_sampler("auto", model="smollm2-135m-instruct", tokenizer=tokenizer)
    out = sampler.generate([prompt_ids, ...], SamplingParams(temperature=1.0, stop=("</search>",)),
                           seeds=[11, 12, ...])
    out[0].token_ids, out[0].logp, out[0].text, out[0].finish_reason
    sampler.load_weights(learner_model.state_dict())   # weight sync, in place

Several agents can share one engine as LoRA adapters over one base (vLLM's multi-LoRA
serving): `adapters[i]` names the adapter that serves prompt i, and one call batches the
requests of every adapter (`VLLMSampler(..., adapters=LoraServing(...))`, `load_adapter`).

What `logp` means, in both backends: log_softmax(logits / T) of the sampled token, with T the
temperature (T = 1 for greedy), taken before top-p truncation. At top_p = 1 (the RL setting)
this is the exact sampling log-prob; the learner's `old_logp` recomputation uses the same T.

Stops (`stop` strings, EOS ids) are applied by both backends through `stops.finish_completion`,
so that both return exactly the same ids for the same raw generation.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Iterable, Iterator, Literal, Mapping, Sequence

import torch

FinishReason = Literal["stop", "eos", "length"]


@dataclass(frozen=True)
class SamplingParams:
    """How to sample one batch (the same for every prompt of a call; seeds are per prompt)."""

    temperature: float = 1.0
    """Softmax temperature; 0 means greedy (argmax), reported with T = 1 log-probs."""
    top_p: float = 1.0
    """Nucleus sampling mass in (0, 1]. Log-probs are reported before truncation (see module
    docstring); vLLM reports them after truncation when top_p < 1 (see vllm_sampler.py)."""
    max_new_tokens: int = 256
    """Cap on generated tokens per prompt; hitting it gives finish_reason "length"."""
    stop: tuple[str, ...] = ()
    """Stop strings (e.g. "</search>", "</answer>"): the output ends right after the token that
    completes the first of them in the decoded output."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise ValueError(f"SamplingParams.temperature must be >= 0 (0 = greedy), got {self.temperature!r}")
        if not (0 < self.top_p <= 1):
            raise ValueError(f"SamplingParams.top_p must be in (0, 1], got {self.top_p!r}")
        if not (isinstance(self.max_new_tokens, int) and self.max_new_tokens >= 1):
            raise ValueError(f"SamplingParams.max_new_tokens must be a positive int, got {self.max_new_tokens!r}")
        if isinstance(self.stop, str):
            # A bare string would be read as a tuple of one-character stops.
            raise ValueError(f"SamplingParams.stop must be a tuple of strings, got the string {self.stop!r}; "
                             f"write stop=({self.stop!r},)")
        stops = tuple(self.stop)
        if any(not isinstance(s, str) or not s for s in stops):
            raise ValueError(f"SamplingParams.stop must hold non-empty strings, got {stops!r}")
        object.__setattr__(self, "stop", stops)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass(frozen=True)
class Completion:
    """One prompt's generation: ids as sampled (cut after a stop string, EOS kept), the
    sampling log-prob of each id, their decoded text, and why generation ended."""

    token_ids: tuple[int, ...]
    logp: tuple[float, ...]
    text: str
    finish_reason: FinishReason

    def __post_init__(self) -> None:
        if len(self.token_ids) != len(self.logp):
            raise ValueError(f"Completion has {len(self.token_ids)} token ids but {len(self.logp)} log-probs")


Weights = Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]]


def named_tensors(weights: Weights) -> Iterator[tuple[str, torch.Tensor]]:
    """A state dict or an iterable of (name, tensor) pairs, as (name, tensor) pairs."""
    items = weights.items() if isinstance(weights, Mapping) else weights
    for item in items:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)
                and isinstance(item[1], torch.Tensor)):
            raise TypeError("load_weights takes a state dict or an iterable of (name, tensor) pairs, "
                            f"got an item of type {type(item).__name__}")
        yield item


class Sampler(ABC):
    """Batched sampling from token-id prompts. Backends implement `generate`, `load_weights`
    and `close`; `sleep`/`wake_up` are no-ops unless the backend can free accelerator memory."""

    tokenizer: object
    eos_token_ids: frozenset[int]

    @abstractmethod
    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        params: SamplingParams = SamplingParams(),
        seeds: Sequence[int | None] | None = None,
        adapters: Sequence[str] | None = None,
    ) -> list[Completion]:
        """One `Completion` per prompt, in order. `seeds[i]` seeds prompt i's sampling (same
        seed, same prompt, same weights -> same sample); None leaves it to the backend's RNG.
        `adapters[i]` names the LoRA adapter that serves prompt i (backends that serve
        adapters; None: the sampler's own weights for every prompt)."""

    @abstractmethod
    def load_weights(self, weights: Weights) -> None:
        """Copy new weights (Hugging Face parameter names) into the sampler's model in place."""

    def sleep(self) -> None:
        """Free accelerator memory for the learner (weights and KV cache); no-op by default."""

    def wake_up(self) -> None:
        """Undo `sleep`; no-op by default."""

    def close(self) -> None:
        """Release the model/engine; the sampler is unusable afterwards."""

    def __enter__(self) -> Sampler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def refuse_adapters(sampler: Sampler, adapters: Sequence[str] | None) -> None:
    """For backends that serve one set of weights: a call that names adapters is an error."""
    if adapters is not None:
        raise ValueError(f"{type(sampler).__name__} serves no LoRA adapters (got adapters={list(adapters)[:3]}...); "
                         "a shared engine of adapters is VLLMSampler's (sampler.shared_engine)")


def check_prompts(prompts: Sequence[Sequence[int]], seeds: Sequence[int | None] | None, vocab_size: int) -> list[list[int]]:
    """Validate a batch of token-id prompts (and its seeds) before any model work."""
    if isinstance(prompts, (str, bytes)) or (len(prompts) and isinstance(prompts[0], (str, int))):
        raise TypeError("generate takes a batch of prompts, each a list of token ids (not text, not one "
                        "flat list); tokenize once with the chat template and pass [ids, ...]")
    out = []
    for i, prompt in enumerate(prompts):
        ids = [int(t) for t in prompt]
        if not ids:
            raise ValueError(f"prompt {i} is empty; every prompt needs at least one token id")
        bad = [t for t in ids if not 0 <= t < vocab_size]
        if bad:
            raise ValueError(f"prompt {i} holds token ids outside the vocabulary [0, {vocab_size}): {bad[:5]}")
        out.append(ids)
    if seeds is not None and len(seeds) != len(out):
        raise ValueError(f"got {len(seeds)} seeds for {len(out)} prompts; pass one seed (or None) per prompt")
    return out
