"""Builders shared by `mem1 eval` and `mem1 train`: task sets, the retriever, the sampler.

Each takes a validated config section and returns a ready component, so evaluation and the
RLlib EnvRunner assemble the same world the same way.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path
from typing import Iterator

from envs import Task
from envs.data import build_task_set, generate_world
from envs.retrieval import HttpRetriever, Retriever

from .config import ConfigError, DataSection, ModelSection, RetrieverSection, SamplerSection

log = logging.getLogger(__name__)


def world_dir(data: DataSection) -> Path:
    from policies.models import cache_dir

    return cache_dir() / "data" / f"world-s{data.world_seed}-{data.world_size}"


def world_size(size: str):
    return int(size) if size.isdigit() else size


def corpus_for(data: DataSection, retriever: RetrieverSection) -> Path:
    """The corpus the retriever serves: the configured file, or the generated world's
    (written once per seed and size under the cache)."""
    if retriever.corpus is not None:
        return Path(retriever.corpus)
    if data.source != "world":
        raise ConfigError(f"data.source={data.source!r} is a task file: set retriever.corpus to the corpus JSONL its questions need")
    folder = world_dir(data)
    corpus = folder / "corpus.jsonl"
    if not corpus.exists():
        generate_world(seed=data.world_seed, size=world_size(data.world_size)).write(folder)
    return corpus


def task_sets(data: DataSection, split: str | None = None) -> dict[int, list[Task]]:
    """N -> tasks for every configured N (composition: docs/method.md)."""
    split = split or data.split
    if data.source == "world":
        source = generate_world(seed=data.world_seed, size=world_size(data.world_size))
    else:
        source = Path(data.source)
        if not source.exists():
            raise FileNotFoundError(f"data.source: task file {source} does not exist")
    return build_task_set(source, data.n_values, data.tasks_per_n, seed=data.seed, split=split)


LOOPBACK = "127.0.0.1"


def service_host() -> str:
    """Where a server this job starts for its env runners binds: loopback, unless this
    process is on a Ray cluster of several nodes; then this node's address, since a runner
    on another node cannot reach 127.0.0.1 here (the URL it gets would fail on every
    search). Checked when the domain opens: an autoscaling cluster that has only its head
    then needs `retriever.mode: ray` or a `retriever.url` instead."""
    ray = sys.modules.get("ray")  # not imported: no cluster to join, and no import to pay for
    if ray is None or not ray.is_initialized():
        return LOOPBACK
    nodes = sum(1 for n in ray.nodes() if n["Alive"])
    if nodes < 2:
        return LOOPBACK
    host = ray.util.get_node_ip_address()
    log.info("Ray cluster of %d nodes: the server for env runners binds %s, this node's address", nodes, host)
    return host


def runner_host(config) -> str:
    """`service_host()` for a job with env runner actors, else loopback: the driver alone
    reaches 127.0.0.1, and the servers have no authentication to expose."""
    runners = getattr(getattr(config, "training", None), "num_env_runners", 0)
    return service_host() if runners > 0 else LOOPBACK


@contextlib.contextmanager
def open_retriever(section: RetrieverSection, corpus: Path, host: str = LOOPBACK) -> Iterator[Retriever]:
    """A retriever for the job's lifetime: an existing URL, a server this job starts (and
    stops) on `host`, a shared Ray actor, or the index in-process."""
    if section.url:
        yield HttpRetriever(section.url, timeout=section.timeout_s, retries=section.retries)
        return
    if section.mode == "local":
        from envs.retrieval import build_or_load_index

        yield build_or_load_index(corpus, section.index, faiss_options=section.faiss_options())
        return
    if section.mode == "ray":
        from envs.retrieval import start_retriever_actor

        yield start_retriever_actor(corpus, section.index, faiss_options=section.faiss_options(), timeout=section.timeout_s)
        return
    from envs.retrieval import start_server_process

    server = start_server_process(corpus, section.index, host=host, port=section.port, faiss_options=section.faiss_options())
    log.info("retriever (%s) serving %s at %s", section.index, corpus, server.url)
    try:
        yield HttpRetriever(server.url, timeout=section.timeout_s, retries=section.retries)
    finally:
        server.stop()


def build_sampler(model: ModelSection, sampler: SamplerSection, tokenizer, *, seed: int = 0, adapters: list[str] | None = None):
    """The configured sampler; with `adapters` (agent names), one vLLM engine that serves each
    as a LoRA adapter of model.lora's shape (sampler.shared_engine)."""
    from policies.samplers import make_sampler, resolve_backend

    backend = resolve_backend(sampler.backend)
    opts = dict(sampler.vllm) if backend == "vllm" else {}
    if backend == "vllm":
        opts.setdefault("max_model_len", sampler.max_model_len)
        opts.setdefault("seed", seed)
    if adapters:  # TrainConfig has checked that shared_engine comes with backend: vllm and model.lora
        from policies.samplers.vllm_sampler import LoraServing

        opts["adapters"] = LoraServing(tuple(adapters), model.lora.r, model.lora.alpha, tuple(model.lora.target_modules))
    return make_sampler(backend, model=model.name, tokenizer=tokenizer, dtype=model.dtype, **opts)


def sampling_params(sampler: SamplerSection, stop: tuple[str, ...] = ()):
    from policies.samplers import SamplingParams

    return SamplingParams(temperature=sampler.temperature, top_p=sampler.top_p, max_new_tokens=sampler.max_new_tokens, stop=stop)
