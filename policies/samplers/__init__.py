"""Samplers: batched generation from token-id prompts with sampling log-probs and in-place
weight sync. Backends: transformers `generate` (CPU default, fallback) and vLLM (GPU default).
See base.py for the contract and stops.py for where a generation ends."""

from .base import Completion, Sampler, SamplingParams
from .factory import BACKENDS, make_sampler, resolve_backend
from .scripted import ScriptedSampler
from .stops import cut_at_stop, finish_completion
from .transformers_sampler import TransformersSampler


def __getattr__(name: str):
    # vLLM is optional and heavy to import (~15 s): load its backend only when asked for.
    if name == "VLLMSampler":
        from .vllm_sampler import VLLMSampler

        return VLLMSampler
    raise AttributeError(name)


__all__ = [
    "BACKENDS",
    "Completion",
    "Sampler",
    "SamplingParams",
    "ScriptedSampler",
    "TransformersSampler",
    "VLLMSampler",
    "cut_at_stop",
    "finish_completion",
    "make_sampler",
    "resolve_backend",
]
