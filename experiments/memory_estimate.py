"""The learner's GPU memory, estimated from a TrainConfig and the model's Hugging Face config
(its config.json: sizes only, no weights), so a config that cannot fit is refused at load
(`training.gpu_memory_gb`) instead of failing with an out-of-memory error hours into a run.

    python -m experiments.memory_estimate experiments/configs/train_qa_grpo_gpu.yaml

What one learner holds (each a term of `MemoryEstimate`):
- weights: every parameter in model.dtype; LoRA adds float32 adapters;
- autocast copies: a float32 model under bfloat16 autocast keeps the bfloat16 cast of each
  weight its forward used until the backward (all layers, or one layer's with gradient
  checkpointing, which recomputes them);
- gradients and AdamW's two moments: per trainable parameter, in its dtype (the float32
  parameters are the master weights; a bfloat16 full fine-tune has none and rounds small
  updates away);
- reference: a frozen copy of the model when KL is on (none with LoRA: the base with the
  adapters off is the reference);
- activations: per packed row of `row_tokens`, what autograd keeps for each trainable
  layer, or with gradient checkpointing each layer's input plus one layer's recompute;
- logits: the (N, V) log-softmax at the N generated positions of a row and its
  exp (entropy), both kept for the backward, and their float32 gradients;
- a dense attention mask for sdpa/tiles (L x L), and a fixed overhead (CUDA context,
  workspaces, fragmentation).
With several learners (DDP) each holds all of this, plus DDP's gradient buckets.
These are estimates to a few GiB, meant to tell "fits" from "does not"; measure a real run
with torch.cuda.max_memory_allocated.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import TrainConfig

GIB = 2**30
OVERHEAD_GIB = 2.0  # CUDA context, cuBLAS/attention workspaces, allocator fragmentation
LOGIT_BYTES = 16  # per generated position and vocabulary entry: log-softmax + exp kept, 2 float32 grads
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}

# config.json values of models a GPU config names, for an estimate without the hub (offline CI)
KNOWN_SHAPES = {
    "Qwen/Qwen2.5-7B": dict(model_type="qwen2", vocab_size=152064, hidden_size=3584, intermediate_size=18944,
                            num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4, tie_word_embeddings=False),
}
# model types whose q/k/v projections have a bias although config.json says nothing of it
QKV_BIAS_TYPES = {"qwen2"}


@dataclass(frozen=True)
class ModelShape:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    tie_word_embeddings: bool
    qkv_bias: bool

    @classmethod
    def from_hf_config(cls, config: dict) -> "ModelShape":
        heads = config["num_attention_heads"]
        return cls(
            vocab_size=config["vocab_size"], hidden_size=config["hidden_size"], intermediate_size=config["intermediate_size"],
            num_hidden_layers=config["num_hidden_layers"], num_attention_heads=heads,
            num_key_value_heads=config.get("num_key_value_heads") or heads,
            head_dim=config.get("head_dim") or config["hidden_size"] // heads,
            tie_word_embeddings=config.get("tie_word_embeddings", True),
            qkv_bias=config.get("attention_bias", config.get("model_type") in QKV_BIAS_TYPES),
        )

    @property
    def projections(self) -> dict[str, tuple[int, int]]:
        """(in, out) features of each linear layer of one decoder layer."""
        h, q, kv, i = self.hidden_size, self.num_attention_heads * self.head_dim, self.num_key_value_heads * self.head_dim, self.intermediate_size
        return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    @property
    def layer_params(self) -> int:
        bias = (self.num_attention_heads + 2 * self.num_key_value_heads) * self.head_dim if self.qkv_bias else 0
        return sum(a * b for a, b in self.projections.values()) + bias + 2 * self.hidden_size  # + two RMSNorms

    @property
    def num_params(self) -> int:
        embeddings = self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)
        return embeddings + self.num_hidden_layers * self.layer_params + self.hidden_size

    def lora_params(self, r: int, targets: list[str]) -> int:
        return self.num_hidden_layers * sum(r * (a + b) for name, (a, b) in self.projections.items() if name in targets)


def model_shape(name: str) -> ModelShape:
    """The shape of model.name: a known GPU model, or the config.json of a local folder, a
    bundled alias (converted once) or a hub model already in the local cache."""
    if name in KNOWN_SHAPES:
        return ModelShape.from_hf_config(KNOWN_SHAPES[name])
    from policies.models import resolve_model

    path = Path(resolve_model(name)) / "config.json"
    if path.is_file():
        return ModelShape.from_hf_config(json.loads(path.read_text()))
    from transformers import AutoConfig

    try:
        return ModelShape.from_hf_config(AutoConfig.from_pretrained(name, local_files_only=True).to_dict())
    except OSError:
        raise ValueError(f"model.name={name!r}: no config.json to estimate its memory from (a local folder, a cached hub "
                         f"model or one of {sorted(KNOWN_SHAPES)}); unset training.gpu_memory_gb to skip the estimate") from None


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes one learner GPU holds at its peak, by term."""

    weights: float
    autocast_copies: float
    gradients: float
    optimizer: float
    reference: float
    activations: float
    logits: float
    attention_mask: float
    ddp_buckets: float
    overhead: float
    row_tokens: int
    trainable_params: int
    num_params: int

    @property
    def total(self) -> float:
        return sum(getattr(self, f.name) for f in fields(self) if f.name not in ("row_tokens", "trainable_params", "num_params"))

    def table(self) -> str:
        """Markdown rows: term | GiB."""
        terms = [f.name for f in fields(self) if f.name not in ("row_tokens", "trainable_params", "num_params")]
        rows = [f"| {t.replace('_', ' ')} | {getattr(self, t) / GIB:.1f} |" for t in terms]
        return "\n".join(["| term | GiB |", "| --- | --- |", *rows, f"| **total** | **{self.total / GIB:.1f}** |"])


def max_turns(config: "TrainConfig") -> int:
    env = config.env
    if env.kind in ("qa", "webqa"):
        return env.qa_config(max(config.data.n_values)).max_turns
    return getattr(env, "max_turns", 1)


def estimate(config: "TrainConfig", shape: ModelShape | None = None, *, row_tokens: int | None = None) -> MemoryEstimate:
    """The learner's peak memory for `config`. `row_tokens` is the longest packed row (default:
    sampler.max_model_len per episode of a row, the most one mem1 context can hold; a run's
    memory/packed_tokens_per_episode measures it)."""
    shape = shape or model_shape(config.model.name)
    m, t, a, lora = config.model, config.training, config.algorithm, config.model.lora
    w = BYTES[m.dtype]
    autocast = bool(t.num_gpus_per_learner) and m.dtype == "float32"  # as experiments/algorithm.py sets it
    act = 2 if autocast else w
    episodes_per_row = a.group_size if a.name == "grpo" and t.share_prompt else 1
    row_tokens = row_tokens or episodes_per_row * config.sampler.max_model_len
    generated = min(row_tokens, episodes_per_row * max_turns(config) * config.sampler.max_new_tokens)
    rows = a.micro_batch_size
    P, layers, h = shape.num_params, shape.num_hidden_layers, shape.hidden_size
    trained_layers = layers if t.trainable_layers is None or lora else t.trainable_layers

    if lora:
        trainable, t_bytes = shape.lora_params(lora.r, lora.target_modules), 4  # peft keeps adapters float32
        adapters = trainable * 4
    else:
        trainable = P if t.trainable_layers is None else t.trainable_layers * shape.layer_params + h
        t_bytes, adapters = w, 0
    value_head = (h + 1) * 4 if a.name == "ppo" else 0

    # what autograd keeps per token in one decoder layer (see the module docstring)
    q, kv, i = shape.num_attention_heads * shape.head_dim, shape.num_key_value_heads * shape.head_dim, shape.intermediate_size
    per_token = 2 * h * (4 + act) + act * (3 * q + 4 * kv + 4 * i)  # norms (float32 inside), attention, MLP
    if lora:
        targets = [shape.projections[name][0] for name in lora.target_modules if name in shape.projections]
        per_token += sum(targets) * 4 * (2 if lora.dropout else 1) + len(targets) * lora.r * 4  # float32 adapter inputs
    if t.gradient_checkpointing:
        activations = rows * row_tokens * (trained_layers * h * act + per_token)
        casts = (shape.layer_params + shape.vocab_size * h) * 2 if autocast else 0
    else:
        activations = rows * row_tokens * trained_layers * per_token
        casts = P * 2 if autocast else 0
    mask = rows * row_tokens**2 * 4 if t.attention in ("sdpa", "tiles") else 0
    return MemoryEstimate(
        weights=P * w + adapters, autocast_copies=casts,
        gradients=trainable * t_bytes + value_head, optimizer=2 * (trainable * t_bytes + value_head),
        reference=P * w if a.kl_coef > 0 and not lora else 0,
        activations=activations, logits=rows * generated * shape.vocab_size * LOGIT_BYTES, attention_mask=mask,
        ddp_buckets=trainable * t_bytes if t.num_learners > 1 else 0, overhead=OVERHEAD_GIB * GIB,
        row_tokens=row_tokens, trainable_params=trainable, num_params=P,
    )


def check_budget(config: "TrainConfig") -> None:
    """Raise ValueError naming the fields when the estimate exceeds training.gpu_memory_gb."""
    budget = config.training.gpu_memory_gb
    if budget is None:
        return
    est = estimate(config)
    if est.total <= budget * GIB:
        return
    m, t, a = config.model, config.training, config.algorithm
    big = sorted(((getattr(est, k) / GIB, k) for k in ("weights", "gradients", "optimizer", "reference", "activations", "logits")), reverse=True)
    raise ValueError(
        f"training.gpu_memory_gb={budget:g}: one learner needs an estimated {est.total / GIB:.1f} GiB "
        f"({', '.join(f'{k} {v:.1f}' for v, k in big[:4])}) for model.name={m.name} "
        f"(model.dtype={m.dtype}, model.lora={'set' if m.lora else 'unset'}, algorithm.kl_coef={a.kl_coef:g}, "
        f"training.gradient_checkpointing={t.gradient_checkpointing}, algorithm.micro_batch_size={a.micro_batch_size}, "
        f"{est.row_tokens} tokens per packed row from sampler.max_model_len={config.sampler.max_model_len} and "
        f"training.share_prompt={t.share_prompt}); set model.lora, gradient_checkpointing, a smaller max_model_len "
        "or micro_batch_size, or raise the budget (experiments/memory_estimate.py)"
    )


if __name__ == "__main__":
    import sys

    from .config import TrainConfig, load_config

    if len(sys.argv) < 2:
        raise SystemExit("usage: python -m experiments.memory_estimate CONFIG.yaml [key=value ...]")
    cfg = load_config(sys.argv[1], TrainConfig, sys.argv[2:] + ["training.gpu_memory_gb=null"])
    est = estimate(cfg)
    print(f"{cfg.model.name}: {est.num_params / 1e9:.2f}B parameters, {est.trainable_params / 1e6:.1f}M trained, "
          f"{est.row_tokens} tokens per packed row\n{est.table()}")
