"""An RLlib RLModule (new API stack) around a Hugging Face causal LM.

The module is the learner's view of the policy: one packed forward pass per episode
(policies/packer.py) gives the log-prob and entropy of every generated token, and, for PPO,
a value per generated token from a linear head on the hidden state that predicted it.
A frozen copy of the initial weights is kept as the KL reference when KL is on.

Env runners never build this module: they sample with a vLLM or transformers sampler and
receive the policy's weights through `get_state(inference_only=True)`, which returns the
Hugging Face state dict as CPU torch tensors, ready for `Sampler.load_weights`.

model_config keys (set by experiments/algorithm.py from the YAML config):
    model: hub id, folder or bundled alias     dtype: weights dtype ("float32")
    value_head: bool (PPO)                     reference: bool (KL to the initial policy)
    attention: "auto" | "sdpa" | "tiles" | "flex"   temperature: float (log-probs of logits / T)
    gradient_checkpointing: bool               autocast: "bfloat16" | None (GPU)
    trainable_layers: int | None (train only the top k decoder layers; None: all)
"""

from __future__ import annotations

import contextlib
import copy
from typing import Any

import torch
from ray.rllib.core.rl_module.apis import InferenceOnlyAPI
from ray.rllib.core.rl_module.torch import TorchRLModule
from ray.rllib.utils.annotations import override

from . import columns as C
from .models import load_model, train_top_layers
from .packer import PackedBatch, forward_packed
from .tile_attention import TILE

LOGP = "logp"
ENTROPY = "entropy"
VALUES = "values"

# Above this many packed tokens per row, FlexAttention's block mask beats SDPA with a dense
# mask on a GPU (an H100 measurement, docs/operations.md: 0.33 s vs 0.63 s at 16k tokens; SDPA is faster at 4k).
FLEX_MIN_TOKENS = 8192


class CausalLMModule(TorchRLModule, InferenceOnlyAPI):
    @override(TorchRLModule)
    def setup(self) -> None:
        cfg = self.model_config
        self.policy = load_model(cfg["model"], dtype=cfg.get("dtype", "float32"))
        self.policy.config.use_cache = False
        train_top_layers(self.policy, cfg.get("trainable_layers"))
        if cfg.get("gradient_checkpointing"):
            self.policy.gradient_checkpointing_enable()
        hidden = self.policy.config.hidden_size
        self.value_head = torch.nn.Linear(hidden, 1) if cfg.get("value_head") and not self.inference_only else None
        if self.value_head is not None:
            torch.nn.init.zeros_(self.value_head.weight)  # start from V = 0: no early value noise
            torch.nn.init.zeros_(self.value_head.bias)
        self.ref = None
        if cfg.get("reference") and not self.inference_only:
            self.ref = copy.deepcopy(self.policy).eval().requires_grad_(False)
        self.temperature = float(cfg.get("temperature", 1.0)) or 1.0

    @override(InferenceOnlyAPI)
    def get_non_inference_attributes(self) -> list[str]:
        return ["value_head", "ref"]

    # -- forward passes ------------------------------------------------------------------

    def _autocast(self):
        dtype = self.model_config.get("autocast")
        if dtype and torch.cuda.is_available():
            return torch.autocast("cuda", dtype=getattr(torch, dtype))
        return contextlib.nullcontext()

    def packed_forward(self, batch: PackedBatch, *, model=None, values: bool = False, entropy: bool = True) -> dict[str, torch.Tensor]:
        """Log-prob (and entropy, values) of every token of `batch`, valid on its loss mask."""
        attention = self.model_config.get("attention", "auto")
        if attention == "auto":  # GPU: FlexAttention for long rows; CPU: tile-sparse SDPA (2.3x dense at 8 turns, bench/learner)
            length = batch.input_ids.shape[1]
            if batch.input_ids.is_cuda:
                attention = "flex" if length >= FLEX_MIN_TOKENS else "sdpa"
            else:
                attention = "tiles" if length > TILE else "sdpa"
        with self._autocast():
            return forward_packed(
                self.policy if model is None else model, batch, attention=attention, temperature=self.temperature,
                entropy=entropy, value_head=self.value_head if values else None,
            )

    @override(TorchRLModule)
    def _forward_train(self, batch: dict[str, Any], **kwargs) -> dict[str, torch.Tensor]:
        return self.packed_forward(PackedBatch.from_columns(batch), values=True)

    @override(TorchRLModule)
    def _forward(self, batch: dict[str, Any], **kwargs) -> dict[str, torch.Tensor]:
        return self.packed_forward(PackedBatch.from_columns(batch), entropy=False)

    @torch.no_grad()
    def reference_logp(self, batch: PackedBatch) -> torch.Tensor | None:
        if self.ref is None:
            return None
        return self.packed_forward(batch, model=self.ref, entropy=False)[LOGP]

    # -- weights -------------------------------------------------------------------------

    @override(TorchRLModule)
    def get_state(self, components=None, *, not_components=None, inference_only: bool = False, **kwargs) -> dict[str, Any]:
        if inference_only:
            # What samplers load: the Hugging Face state dict (HF names), CPU tensors. RLlib's
            # default would convert to numpy, which cannot hold bf16.
            return {k: v.detach().to("cpu") for k, v in self.policy.state_dict().items()}
        return super().get_state(components, not_components=not_components, inference_only=False, **kwargs)


def policy_columns(batch: PackedBatch) -> dict[str, torch.Tensor]:
    """The columns `_forward_train` reads, from a PackedBatch (tests and tools)."""
    return {
        C.INPUT_IDS: batch.input_ids, C.POSITION_IDS: batch.position_ids, C.BLOCK_IDS: batch.block_ids,
        C.CHAINS: batch.chains, C.LOSS_MASK: batch.loss_mask, C.LOGIT_INDEX: batch.logit_index,
        C.SAMPLE_LOGP: batch.old_logp, C.TURN_IDS: batch.turn_ids,
    }
