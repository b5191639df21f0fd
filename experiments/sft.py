"""`mem1 sft CONFIG`: supervised fine-tuning on demonstration traces, through the RL stack's
own packer and Learner (the `sft` objective of policies/losses.py: the NLL of the generated
tokens, exact replay of each turn's context under the memory policy).

    runs/<name>-<time>/traces.jsonl          the training traces, as chat turns (reusable as sft.traces)
    runs/<name>-<time>/metrics.jsonl         one line per optimizer step (loss) and per epoch (held-out loss)
    runs/<name>-<time>/checkpoints/final     the LearnerGroup checkpoint (weights and optimizer)
    runs/<name>-<time>/model/                the fine-tuned policy as a Hugging Face folder

This is the warm start a small model needs before RL can see a reward spread (the base
135M model never follows the protocol, so every GRPO group scores the same), and it is the
paper's SFT baseline: trained on traces up to some N, it learns the format but, unlike RL,
is not expected to generalise past its training horizon. `mem1 train -o
training.init_from=runs/<name>-<time>/model` continues from it with RL.

Traces come from the domain's scripted expert (`sft.traces: expert`; QA over the generated
world, WebShop) or from a JSONL file of chat turns (experiments/traces.py). The optimizer
is the same AdamW as RL, with `algorithm.lr`, warm-up and clipping; the MLflow run goes to
the config's tracking experiment with tag kind=sft.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from policies.chat import ChatFormat
from policies.models import load_tokenizer
from policies.packer import pack_group, pad_columns
from policies.records import Episode

from . import registry, tracking
from .components import sampling_params
from .config import ConfigError, TrainConfig, flat_params
from .domains import make_domain
from .train import TrainResult, export_policy, new_run_dir, save_atomically
from .traces import expert_traces, read_traces, write_traces

log = logging.getLogger(__name__)


def sft(config: TrainConfig, *, quiet: bool = False) -> TrainResult:
    """Fine-tune on the config's traces; returns the run (its `model_dir` is the policy)."""
    from .algorithm import build_algorithm_config
    from .env_runner import ACTION_SPACE, OBS_SPACE

    if config.algorithm.name != "sft":
        raise ConfigError(f"mem1 sft needs algorithm.name: sft (got {config.algorithm.name!r}); RL runs with `mem1 train`")
    config = registry.resolve_config(config).starting_weights()
    tracking.quiet()
    run_dir = new_run_dir(config)
    tokenizer = load_tokenizer(config.model.name)
    chat = ChatFormat(tokenizer, config.model.chat_mode, config.model.system_prompt)
    memory = config.memory.build()
    train_eps, heldout_eps = load_sft_traces(config, chat, memory, quiet=quiet)
    write_traces(train_eps, run_dir / "traces.jsonl")
    rows_of = config.algorithm.micro_batch_size
    heldout_cols = pad_columns(shared_prefix_rows(heldout_eps, rows_of)) if heldout_eps else None

    exp_id = tracking.setup(config.tracking.tracking_uri, config.output_dir, config.tracking.experiment)
    learner_group = None
    history: list[dict] = []
    try:
        spaces = {"__env__": (OBS_SPACE, ACTION_SPACE), "default_policy": (OBS_SPACE, ACTION_SPACE)}
        learner_group = build_algorithm_config(config).build_learner_group(spaces=spaces)
        s = config.sft
        steps_per_epoch = -(-len(train_eps) // s.batch_size)
        rng = np.random.default_rng(config.seed)
        tags = {"kind": "sft", "memory_policy": memory.spec, "run_dir": str(run_dir.resolve())}
        with tracking.run(exp_id, config.tracking.run_name or run_dir.name, params={**flat_params(config), "sft.train_traces": len(train_eps), "sft.heldout_traces": len(heldout_eps)}, tags=tags) as run:
            if not quiet:
                print(f"supervised fine-tuning under {memory.spec} on {len(train_eps)} traces ({_tokens(shared_prefix_rows(train_eps, rows_of))} packed tokens) for {s.epochs} epochs; outputs in {run_dir}")
            metrics_file = open(run_dir / "metrics.jsonl", "w")

            def record(m: dict, step: int) -> None:  # history, MLflow and metrics.jsonl alike
                history.append({"step": step, **m})
                tracking.log_metrics(m, step=step)
                metrics_file.write(json.dumps({"step": step, **m}) + "\n")
                metrics_file.flush()

            if heldout_cols is not None:
                record({"sft/heldout_loss": _heldout_loss(learner_group, heldout_cols), "sft/epoch": 0}, 0)
            step = 0
            with tqdm(total=s.epochs * steps_per_epoch, desc="sft", unit="step", disable=quiet or None, dynamic_ncols=True) as bar:
                for epoch in range(1, s.epochs + 1):
                    order = rng.permutation(len(train_eps))
                    for start in range(0, len(order), s.batch_size):
                        t0 = time.perf_counter()
                        batch = shared_prefix_rows([train_eps[i] for i in order[start : start + s.batch_size]], rows_of)
                        result = learner_group.update(batch=_batch(batch), num_epochs=1, minibatch_size=None)
                        step += 1
                        learned = result[0]["default_policy"] if isinstance(result, list) else result["default_policy"]
                        tokens = sum(int(p.loss_mask.sum()) for p in batch)
                        m = {"sft/loss": float(_value(learned["policy_loss"])), "sft/epoch": epoch, "perf/step_s": time.perf_counter() - t0,
                             "perf/train_tokens_per_s": sum(p.num_tokens for p in batch) / (time.perf_counter() - t0), "sft/loss_tokens": tokens}
                        record(m, step)
                        bar.update(1)
                        bar.set_postfix(loss=f"{m['sft/loss']:.3f}", epoch=epoch)
                    if heldout_cols is not None:
                        record({"sft/heldout_loss": _heldout_loss(learner_group, heldout_cols), "sft/epoch": epoch}, step)
                        if not quiet:
                            tqdm.write(f"epoch {epoch}/{s.epochs}: train loss {m['sft/loss']:.3f}, held-out loss {history[-1]['sft/heldout_loss']:.3f}")
            metrics_file.close()
            save_atomically(learner_group, run_dir / "checkpoints" / "final")
            model_dir = export_policy(learner_group, config, run_dir / "model") if config.training.export_model else None
            tracking.log_artifacts([run_dir / "metrics.jsonl", run_dir / "traces.jsonl"])
            (run_dir / "run.json").write_text(json.dumps({"mlflow_run_id": run.info.run_id, "model": str(model_dir) if model_dir else None}, indent=2))
            if not quiet:
                print(f"fine-tuned policy: {model_dir}")
            return TrainResult(run_dir, step, run.info.run_id, model_dir, history)
    finally:
        if learner_group is not None:
            learner_group.shutdown()


def load_sft_traces(config: TrainConfig, chat: ChatFormat, memory, *, quiet: bool = True) -> tuple[list[Episode], list[Episode]]:
    """(training traces, held-out traces) of `config.sft`: from the domain's expert on the
    train and test splits, or from the trace file (its last `heldout_tasks` lines held out)."""
    s = config.sft
    if s.traces != "expert":
        episodes = read_traces(s.traces, chat, memory)
        cut = len(episodes) - s.heldout_tasks if 0 < s.heldout_tasks < len(episodes) else len(episodes)
        return episodes[:cut], episodes[cut:]
    wanted = {"train": s.tasks, "test": {n: s.heldout_tasks for n in s.tasks} if s.heldout_tasks else {}}
    data = config.data.model_copy(update={"n_values": sorted(s.tasks), "tasks_per_n": max(max(s.tasks.values()), s.heldout_tasks)})
    out = {}
    with make_domain(config.model_copy(update={"data": data})) as domain:
        for split, per_n in wanted.items():
            tasks = {n: ts[: per_n[n]] for n, ts in domain.tasks(split).items() if per_n.get(n)}
            total = sum(map(len, tasks.values()))
            with tqdm(total=total, desc=f"expert traces ({split})", unit="ep", disable=quiet or None, leave=False, dynamic_ncols=True) as bar:
                out[split] = expert_traces(
                    domain, tasks, chat, memory, sampling_params(config.sampler), max_model_len=config.sampler.max_model_len,
                    seed=config.seed, on_episode_end=lambda ep: bar.update(1),
                )
    train = out["train"]
    if s.min_em is not None:
        train = [e for e in train if e.info.get("em_mean", 0.0) >= s.min_em]
    if not train:
        raise ConfigError(f"sft: no training traces left (sft.min_em={s.min_em}); lower it or add sft.tasks")
    if not quiet:
        for split, eps in out.items():
            if eps:
                em = np.mean([e.info.get("em_mean", e.info.get("reward", 0.0)) for e in eps])
                print(f"expert traces ({split}): {len(eps)} episodes, mean score {em:.3f}, {np.mean([len(e.turns) for e in eps]):.1f} turns each")
    return train, out["test"]


def shared_prefix_rows(episodes: list[Episode], per_row: int) -> list:
    """Rows of `per_row` traces each, laying out once the prompt prefix they share (the task
    instruction before the questions: about 200 of a QA prompt's 220-320 tokens); exact, as
    any packing (policies/packer.py pack_group)."""
    return [pack_group(episodes[i : i + per_row], share="prefix") for i in range(0, len(episodes), per_row)]


def _batch(packed):
    from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch

    cols = pad_columns(packed)
    return MultiAgentBatch({"default_policy": SampleBatch(cols)}, env_steps=len(packed))


def _heldout_loss(learner_group, cols) -> float:
    """Mean NLL per generated token of the held-out traces."""
    results = [r.get() for r in learner_group.foreach_learner(lambda learner: learner.nll(cols))]  # RemoteCallResults
    return sum(t for t, _ in results) / max(sum(n for _, n in results), 1)


def _value(v):
    return v.peek() if hasattr(v, "peek") else v


def _tokens(packed) -> int:
    return sum(p.num_tokens for p in packed)

