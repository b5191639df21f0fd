"""An RLlib RLModule (new API stack) around a Hugging Face causal LM.

The module is the learner's view of the policy: one packed forward pass per episode
(policies/packer.py) gives the log-prob and entropy of every generated token, and, for PPO,
a value per generated token from a linear head on the hidden state that predicted it.
A frozen copy of the initial weights is kept as the KL reference when KL is on (with LoRA,
no copy: the base model with the adapters switched off is the reference).

Env runners never build this module: they sample with a vLLM or transformers sampler and
receive the policy's weights through `get_state(inference_only=True)`, which returns the
Hugging Face state dict as CPU torch tensors, ready for `Sampler.load_weights`; or, with
`sync: adapter` (agents served as LoRA adapters of one shared engine), the adapter's tensors
alone, ready for `VLLMSampler.load_adapter`. `hf_state_dict()` is always the full (merged)
Hugging Face state dict, for export.

model_config keys (set by experiments/algorithm.py from the YAML config):
    model: hub id, folder or bundled alias     dtype: weights dtype ("float32")
    value_head: bool (PPO)                     reference: bool (KL to the initial policy)
    attention: "auto" | "sdpa" | "tiles" | "flex"   temperature: float (log-probs of logits / T)
    gradient_checkpointing: bool               autocast: "bfloat16" | None (GPU)
    trainable_layers: int | None (train only the top k decoder layers; None: all)
    lora: {r, alpha, dropout, target_modules} | None (peft LoRA adapters; only they train)
    sync: "weights" | "adapter" (what inference-only state holds; "adapter" needs lora)
"""

from __future__ import annotations

import contextlib
import copy
from typing import Any, Iterator

import torch
from ray.rllib.core.rl_module.apis import InferenceOnlyAPI
from ray.rllib.core.rl_module.torch import TorchRLModule
from ray.rllib.utils.annotations import override

from . import columns as C
from .models import load_model, train_top_layers
from .packer import PackedBatch, forward_packed
from .tile_attention import TILE, keep_packed_attention

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
        # With autocast (GPU, dtype float32) the parameters stay float32: autocast casts each
        # matmul's inputs to bfloat16, so the optimizer updates float32 master weights.
        self.policy = load_model(cfg["model"], dtype=cfg.get("dtype", "float32"))
        self.policy.config.use_cache = False
        keep_packed_attention(self.policy)  # the kernel follows the call, gradient checkpointing's recompute too
        train_top_layers(self.policy, cfg.get("trainable_layers"))
        if cfg.get("gradient_checkpointing"):
            self.policy.gradient_checkpointing_enable()
        self.lora = bool(cfg.get("lora"))
        if self.lora:
            self.policy = _with_lora(self.policy, cfg["lora"])
        if cfg.get("sync", "weights") not in ("weights", "adapter"):
            raise ValueError(f"model_config sync={cfg['sync']!r}: 'weights' (the HF state dict) or 'adapter' (LoRA tensors only)")
        self.sync_adapter = cfg.get("sync") == "adapter"
        if self.sync_adapter and not self.lora:
            raise ValueError("model_config sync='adapter' needs lora: a module without adapters has none to send")
        hidden = self.policy.config.hidden_size
        self.value_head = torch.nn.Linear(hidden, 1) if cfg.get("value_head") and not self.inference_only else None
        if self.value_head is not None:
            torch.nn.init.zeros_(self.value_head.weight)  # start from V = 0: no early value noise
            torch.nn.init.zeros_(self.value_head.bias)
        self.ref = None
        # LoRA: the reference is the base with the adapters off (reference_logp), no copy
        if cfg.get("reference") and not self.inference_only and not self.lora:
            self.ref = copy.deepcopy(self.policy).eval().requires_grad_(False)
        self.has_reference = bool(cfg.get("reference")) and not self.inference_only
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
                self.lm if model is None else model, batch, attention=attention, temperature=self.temperature,
                entropy=entropy, value_head=self.value_head if values else None,
            )

    @override(TorchRLModule)
    def _forward_train(self, batch: dict[str, Any], **kwargs) -> dict[str, torch.Tensor]:
        return self.packed_forward(PackedBatch.from_columns(batch), values=True)

    @override(TorchRLModule)
    def _forward(self, batch: dict[str, Any], **kwargs) -> dict[str, torch.Tensor]:
        return self.packed_forward(PackedBatch.from_columns(batch), entropy=False)

    @property
    def lm(self):
        """The Hugging Face causal LM the forward passes run (with LoRA: peft's wrapper's
        base model, whose linear layers carry the adapters)."""
        return self.policy.get_base_model() if self.lora else self.policy

    @torch.no_grad()
    def reference_logp(self, batch: PackedBatch) -> torch.Tensor | None:
        if not self.has_reference:
            return None
        if self.lora:
            with self.policy.disable_adapter():
                return self.packed_forward(batch, entropy=False)[LOGP]
        return self.packed_forward(batch, model=self.ref, entropy=False)[LOGP]

    # -- weights -------------------------------------------------------------------------

    @override(TorchRLModule)
    def get_state(self, components=None, *, not_components=None, inference_only: bool = False, **kwargs) -> dict[str, Any]:
        # CPU torch tensors, not RLlib's numpy arrays: numpy cannot hold bfloat16 (a bf16 model's
        # checkpoint would fail); set_state and checkpoint restore take either.
        if inference_only and self.sync_adapter:
            # What a shared engine loads: this agent's adapter only (a few MB, not the model)
            from peft import get_peft_model_state_dict

            weights = get_peft_model_state_dict(self.policy).items()
        elif inference_only:
            return self.hf_state_dict()
        else:
            weights = self.state_dict().items()
        return {k: v.detach().to("cpu") for k, v in weights}

    def hf_state_dict(self) -> dict[str, torch.Tensor]:
        """The policy as a Hugging Face state dict (HF names, LoRA merged), CPU tensors."""
        weights = _merged_state_dict(self.lm) if self.lora else self.policy.state_dict().items()
        return {k: v.detach().to("cpu") for k, v in weights}


def _with_lora(model, lora: dict[str, Any]):
    """peft's LoRA wrapper around `model`: adapters on `lora["target_modules"]`, every base
    weight frozen. peft keeps the adapters float32 under a bfloat16 base (its default
    autocast_adapter_dtype), so they are the master weights of what trains."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                        target_modules=list(lora["target_modules"]), bias="none")
    try:
        return get_peft_model(model, config)
    except ValueError as e:  # no module of the model matches a name
        raise ValueError(f"model.lora.target_modules={lora['target_modules']}: {e}") from None


def _merged_state_dict(model) -> Iterator[tuple[str, torch.Tensor]]:
    """The base model's Hugging Face state dict with the adapter folded in (W + scale * B A),
    computed on the side (merging in place and back would perturb the base weights), one
    layer at a time so that only one merged weight exists on the GPU at once."""
    from peft.tuners.lora import LoraLayer

    adapted = {f"{name}.weight": m for name, m in model.named_modules() if isinstance(m, LoraLayer)}
    for key, value in model.state_dict().items():
        if ".lora_" in key:
            continue
        key = key.replace(".base_layer.", ".")
        if key in adapted:  # one adapter ("default"); the sum is rounded to the base dtype once
            (adapter,) = adapted[key].active_adapters
            value = (value + adapted[key].get_delta_weight(adapter)).to(value.dtype)
        yield key, value


def policy_columns(batch: PackedBatch) -> dict[str, torch.Tensor]:
    """The columns `_forward_train` reads, from a PackedBatch (tests and tools)."""
    return {
        C.INPUT_IDS: batch.input_ids, C.POSITION_IDS: batch.position_ids, C.BLOCK_IDS: batch.block_ids,
        C.CHAINS: batch.chains, C.LOSS_MASK: batch.loss_mask, C.LOGIT_INDEX: batch.logit_index,
        C.SAMPLE_LOGP: batch.old_logp, C.TURN_IDS: batch.turn_ids,
    }
