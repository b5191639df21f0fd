"""The transformers backend: batched `model.generate` from token-id prompts (left padding with
an attention mask), the CPU default and the fallback wherever vLLM is missing.

How it departs from a plain `generate(do_sample=True)` call, and why:
- Sampling happens inside one LogitsProcessor (`_SampleAndRecord`), and `generate` runs in
  greedy mode on the one-hot scores it returns. That gives (1) the sampling log-prob of each
  token at the step it is drawn, log_softmax(logits / T) before top-p, in O(B x V) memory
  (keeping `output_logits` would hold B x steps x V floats: GBs at batch 32 x 256 x 49k), and
  (2) a torch.Generator per row, so a row's sample depends on its own seed and prompt only,
  not on which other prompts share the batch (generate's own sampling draws every row from
  one global RNG). Temperature and top-p are applied in that processor (top-p by transformers'
  `TopPLogitsWarper`); generate's own warpers are off.
- Stop strings end a row early through `_StopStringWatch`, which decodes the row's generated
  tail only (transformers' `StopStringCriteria` also matches stop strings that straddle the
  prompt). The authoritative cut is `stops.finish_completion`, shared with vLLM.
- The model's generation_config.json cannot change the distribution: repetition penalty and
  n-gram blocking are set neutral (vLLM ignores them as well when given explicit params).

Seeds: same seed, same prompt, same weights, same device -> same sample, whatever else is in
the batch (up to float noise from the padding of other rows, which can flip near-ties).
Unseeded rows draw their seed from torch's global RNG, so `torch.manual_seed` makes a whole
call reproducible.
"""

from __future__ import annotations

import gc
import os
from typing import Sequence

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList
from transformers.generation.logits_process import TopPLogitsWarper

from ..models import load_model
from .base import Completion, Sampler, SamplingParams, Weights, check_prompts, named_tensors, refuse_adapters
from .stops import decode, default_eos_token_ids, finish_completion, stop_window


class _SampleAndRecord(LogitsProcessor):
    """Draws each row's next token, records its log-prob, and returns scores that make
    generate's greedy step pick exactly that token. Dims: B rows, V vocabulary."""

    def __init__(self, params: SamplingParams, seeds: list[int], device: torch.device):
        self.params = params
        self.top_p = TopPLogitsWarper(params.top_p) if params.top_p < 1 else None
        self.generators = []
        if not params.greedy:
            for seed in seeds:
                g = torch.Generator(device=device)
                g.manual_seed(seed)
                self.generators.append(g)
        self.logp: list[torch.Tensor] = []  # one (B,) tensor per generated token

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        logits = scores.float()  # (B, V)
        if self.params.greedy:
            tokens = logits.argmax(dim=-1)  # (B,)
            logp = torch.log_softmax(logits, dim=-1)
        else:
            logits = logits / self.params.temperature
            logp = torch.log_softmax(logits, dim=-1)  # before top-p: the reported quantity
            kept = self.top_p(input_ids, logits) if self.top_p is not None else logits
            probs = torch.softmax(kept, dim=-1)
            tokens = torch.cat([torch.multinomial(probs[b], 1, generator=g) for b, g in enumerate(self.generators)])
        self.logp.append(logp.gather(1, tokens[:, None]).squeeze(1))
        return torch.full_like(scores, float("-inf")).scatter_(1, tokens[:, None], 0.0)


class _StopStringWatch(StoppingCriteria):
    """Marks a row done once its generated tail decodes to text containing a stop string."""

    def __init__(self, tokenizer, stops: tuple[str, ...], prompt_len: int):
        self.tokenizer, self.stops, self.prompt_len = tokenizer, stops, prompt_len
        self.window = stop_window(stops)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        tails = input_ids[:, self.prompt_len:][:, -self.window:].tolist()
        done = [any(s in decode(self.tokenizer, tail) for s in self.stops) for tail in tails]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class TransformersSampler(Sampler):
    """`generate`-based sampler over a model object (shared or private) or a model path/alias."""

    def __init__(
        self,
        model_or_path,
        tokenizer,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | str | None = None,
        eos_token_ids: Sequence[int] | None = None,
    ):
        device = torch.device(device)
        if dtype is None:  # fp32 on CPU (bf16 matmuls are slow there), bf16 on accelerators
            dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
        if isinstance(model_or_path, (str, os.PathLike)):
            self.model = load_model(str(model_or_path), dtype=dtype, device=device)
        else:
            self.model = model_or_path.to(device).eval()
        self.tokenizer = tokenizer
        self.device = device
        self.eos_token_ids = (
            frozenset(int(t) for t in eos_token_ids) if eos_token_ids is not None
            else default_eos_token_ids(tokenizer, self.model.generation_config)
        )
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self.eos_token_ids)
        self.vocab_size = int(self.model.get_output_embeddings().weight.shape[0])

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        params: SamplingParams = SamplingParams(),
        seeds: Sequence[int | None] | None = None,
        adapters: Sequence[str] | None = None,
    ) -> list[Completion]:
        refuse_adapters(self, adapters)
        if self.model is None:
            raise RuntimeError("this TransformersSampler was closed; build a new one")
        batch = check_prompts(prompts, seeds, self.vocab_size)
        if not batch:
            return []
        row_seeds = [
            int(s) if s is not None else int(torch.randint(0, 2**62, ()))
            for s in (seeds if seeds is not None else [None] * len(batch))
        ]
        prompt_len = max(len(p) for p in batch)
        input_ids = torch.full((len(batch), prompt_len), self.pad_token_id, dtype=torch.long)  # (B, P)
        attention_mask = torch.zeros((len(batch), prompt_len), dtype=torch.long)  # (B, P)
        for i, p in enumerate(batch):  # left padding: every prompt ends at column P-1
            input_ids[i, prompt_len - len(p):] = torch.tensor(p)
            attention_mask[i, prompt_len - len(p):] = 1
        sampler = _SampleAndRecord(params, row_seeds, self.device)
        criteria = [_StopStringWatch(self.tokenizer, params.stop, prompt_len)] if params.stop else []
        config = GenerationConfig(
            max_new_tokens=params.max_new_tokens,
            do_sample=False,  # greedy over the one-hot scores of _SampleAndRecord
            num_beams=1,
            eos_token_id=sorted(self.eos_token_ids),
            pad_token_id=self.pad_token_id,
            repetition_penalty=1.0,
            no_repeat_ngram_size=0,
            use_cache=True,
        )
        with torch.inference_mode():
            sequences = self.model.generate(
                input_ids=input_ids.to(self.device),
                attention_mask=attention_mask.to(self.device),
                generation_config=config,
                logits_processor=LogitsProcessorList([sampler]),
                stopping_criteria=StoppingCriteriaList(criteria),
            )
        generated = sequences[:, prompt_len:].cpu()  # (B, N)
        logp = torch.stack(sampler.logp, dim=1).cpu() if sampler.logp else torch.zeros(len(batch), 0)  # (B, N)
        if logp.shape != generated.shape:
            raise RuntimeError(f"recorded {tuple(logp.shape)} log-probs for {tuple(generated.shape)} generated ids")
        return [
            finish_completion(ids, lps, self.tokenizer, params.stop, self.eos_token_ids)
            for ids, lps in zip(generated.tolist(), logp.tolist())
        ]

    def load_weights(self, weights: Weights) -> None:
        """Copy tensors into the model's parameters and buffers by name (Hugging Face names;
        a partial state dict updates only what it names). Tied weights accept either name."""
        if self.model is None:
            raise RuntimeError("this TransformersSampler was closed; build a new one")
        targets = self.model.state_dict(keep_vars=True)
        with torch.no_grad():
            for name, tensor in named_tensors(weights):
                target = targets.get(name)
                if target is None:
                    example = next(iter(targets))
                    raise KeyError(f"load_weights: {name!r} is not a parameter of the sampler's model "
                                   f"({type(self.model).__name__}); expected Hugging Face names such as {example!r}")
                if target.shape != tensor.shape:
                    raise ValueError(f"load_weights: {name!r} has shape {tuple(tensor.shape)}, "
                                     f"the sampler's model expects {tuple(target.shape)}")
                target.copy_(tensor)

    def close(self) -> None:
        self.model = None
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
