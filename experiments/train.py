"""`mem1 train CONFIG [--resume]`: RL training of a memory policy on RLlib's new API stack.

    runs/<name>-<time>/run.json            the MLflow run id and the checkpoints (for --resume)
    runs/<name>-<time>/checkpoints/iter_K  RLlib checkpoints (every k iterations and on exit)
    runs/<name>-<time>/model/              the trained policy as a Hugging Face folder (model/<agent>/ each, with agents:)
    runs/<name>-<time>/metrics.jsonl       one line of metrics per iteration

Every iteration prints one line (reward, EM/F1, peak tokens, KL, tokens/s, time split) and
logs the same metrics to MLflow at step = iteration. `--resume` continues the newest run of
the config's name from its last checkpoint: the same iteration count, the same MLflow run.
A crash or Ctrl-C still writes a checkpoint first (the checkpoint is written to a temporary
folder and renamed, so an interrupted save never replaces a good one). A run killed outright
re-runs the iterations since its last checkpoint, so MLflow gets an iteration's metrics with
the checkpoint that holds it (never a step twice), and metrics.jsonl is cut back on resume.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import registry, tracking
from .config import ConfigError, TrainConfig, config_differences, flat_params, validate
from .domains import make_domain
from .faults import check_search_errors

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    iterations: int
    mlflow_run_id: str
    model_dir: Path | None
    history: list[dict]
    agent_runs: dict[str, str] = field(default_factory=dict)  # agent -> its MLflow child run (a multi-agent run)
    agent_models: dict[str, Path] = field(default_factory=dict)  # agent -> its exported folder


def train(config: TrainConfig, *, resume: bool = False, quiet: bool = False, allow_config_change: bool = False,
          log_each_iteration: bool = False,
          on_iteration: Callable[[int, dict[str, float]], None] | None = None) -> TrainResult:
    """Train `config`; `on_iteration(iteration, metrics)` runs after each iteration (a sweep
    reports to Ray Tune there). `resume` refuses a config that differs from the run's
    (other than training.iterations) unless `allow_config_change`. `log_each_iteration`
    sends metrics to MLflow at once instead of with each checkpoint: for runs that are never
    resumed from their own checkpoints (sweep trials, whose early stop ends them unannounced)."""
    import ray

    from .algorithm import build_algorithm_config, iteration_metrics

    if config.algorithm.name == "sft":
        raise ConfigError("algorithm.name=sft is supervised fine-tuning on traces: run `mem1 sft CONFIG`")
    config = registry.resolve_config(config).starting_weights()
    tracking.quiet()
    run_dir, state = _run_dir(config, resume, allow_config_change)
    exp_id = tracking.setup(config.tracking.tracking_uri, config.output_dir, config.tracking.experiment)
    started_ray = False
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False, namespace="mem1")
        started_ray = True
    history: list[dict] = []
    algo = None
    try:
        with make_domain(config) as domain:
            overrides = domain.worker_overrides()
            algo = build_algorithm_config(config, overrides).build_algo()
            retriever = overrides.get("retriever.url") or config.retriever.url or f"retriever.mode={config.retriever.mode}"
            if state.get("checkpoints"):
                checkpoint = state["checkpoints"][-1]
                algo.restore_from_path(checkpoint)
                log.info("resumed from %s at iteration %d", checkpoint, algo.training_iteration)
            if resume:
                _cut_metrics_file(run_dir / "metrics.jsonl", algo.training_iteration)
            pending: list[tuple[int, dict]] = []  # MLflow gets them with the checkpoint that holds them

            def log_iteration(m: dict, step: int) -> None:
                tracking.log_metrics(m, step=step)
                for agent, run_id in state.get("agent_runs", {}).items():
                    tracking.log_metrics(agent_metrics(m, agent), step=step, run_id=run_id)

            def checkpoint_and_log() -> None:
                _checkpoint(algo, run_dir, state, config.training.keep_checkpoints)
                for step, m in pending:
                    log_iteration(m, step)
                pending.clear()

            with tracking.run(
                exp_id, config.tracking.run_name or run_dir.name, run_id=state.get("mlflow_run_id"), parent_run_id=config.tracking.parent_run_id,
                params=flat_params(config), tags={"kind": "train", "memory_policy": policy_spec(config), "run_dir": str(run_dir.resolve())},
            ) as run:
                state["mlflow_run_id"] = run.info.run_id
                if config.agents and not state.get("agent_runs"):
                    state["agent_runs"] = _agent_runs(config, exp_id, run, run_dir)
                _save_state(run_dir, state)
                if resume:  # a kill between a checkpoint and its metrics' logging left them out
                    _log_missing_steps(run.info.run_id, run_dir / "metrics.jsonl")
                if not quiet:
                    print(f"training {policy_spec(config)} with {config.algorithm.name} for {config.training.iterations} iterations; outputs in {run_dir}")
                try:
                    while algo.training_iteration < config.training.iterations:
                        t0 = time.perf_counter()
                        metrics = iteration_metrics(algo.train())
                        metrics["perf/iteration_s"] = time.perf_counter() - t0
                        it = algo.training_iteration
                        history.append({"iteration": it, **metrics})
                        if log_each_iteration:
                            log_iteration(metrics, it)
                        else:
                            pending.append((it, metrics))
                        with open(run_dir / "metrics.jsonl", "a") as f:
                            f.write(json.dumps({"iteration": it, **metrics}) + "\n")
                        if not quiet:
                            print(progress_line(it, config.training.iterations, metrics, list(config.agents)), flush=True)
                        if on_iteration is not None:
                            on_iteration(it, metrics)
                        check_search_errors(metrics, config.training.max_search_error_rate, retriever, it)
                        if it % config.training.checkpoint_every == 0:
                            checkpoint_and_log()
                finally:  # also on Ctrl-C or a crash: nothing learned is lost
                    if algo.training_iteration and not (state.get("checkpoints") or [""])[-1].endswith(f"iter_{algo.training_iteration:04d}"):
                        checkpoint_and_log()
                agent_models = {}
                if config.training.export_model and config.agents:
                    agent_models = {agent: export_policy(algo.learner_group, config, run_dir / "model" / agent, module_id=agent) for agent in config.agents}
                    model_dir = run_dir / "model"
                else:
                    model_dir = export_policy(algo.learner_group, config, run_dir / "model") if config.training.export_model else None
                for run_id in state.get("agent_runs", {}).values():
                    mlflow_client().set_terminated(run_id, "FINISHED")
                if model_dir is not None and config.training.log_model and not config.agents:  # an agent's folder registers by path
                    model_uri = registry.log_policy(model_dir)
                    if config.training.registered_model_name:
                        uri = tracking.tracking_uri(config.tracking.tracking_uri, config.output_dir)
                        registry.register_logged(model_uri, config.training.registered_model_name, run_dir, uri)
                tracking.log_artifacts([run_dir / "metrics.jsonl"])
        return TrainResult(run_dir, algo.training_iteration, state["mlflow_run_id"], model_dir, history,
                           dict(state.get("agent_runs", {})), agent_models)
    finally:
        if algo is not None:
            algo.stop()
        if started_ray:
            ray.shutdown()


def policy_spec(config: TrainConfig) -> str:
    """The memory policy trained, or every agent's: `mem1=mem1,full=full_context`."""
    return ",".join(f"{agent}={memory.spec}" for agent, memory in config.agent_memories().items()) if config.agents else config.memory.spec


def agent_metrics(metrics: dict[str, float], agent: str) -> dict[str, float]:
    """One agent's metrics of a multi-agent iteration under the names of a plain run (so
    `mem1 compare` lines its child run up with single-agent runs), with the iteration's time split."""
    prefix = f"agents/{agent}/"
    own = {k[len(prefix):]: v for k, v in metrics.items() if k.startswith(prefix)}
    return {**{k: v for k, v in metrics.items() if k.startswith("perf/") and k not in own}, **own}


def _agent_runs(config: TrainConfig, experiment_id: str, parent, run_dir: Path) -> dict[str, str]:
    """One MLflow child run per agent, its params those of a plain run of its memory policy."""
    from mlflow.entities import Param

    client = mlflow_client()
    runs = {}
    for agent, memory in config.agent_memories().items():
        plain = config.model_copy(update={"memory": memory, "agents": {}})
        run = client.create_run(experiment_id, run_name=f"{parent.info.run_name}/{agent}", tags={
            "mlflow.parentRunId": parent.info.run_id, "kind": "train", "agent": agent, "memory_policy": memory.spec,
            "run_dir": str(run_dir.resolve()), "git_sha": tracking.git_sha() or "unknown",
        })
        client.log_batch(run.info.run_id, params=[Param(k, tracking.param_value(v)) for k, v in flat_params(plain).items()])
        runs[agent] = run.info.run_id
    return runs


def mlflow_client():
    import mlflow

    return mlflow.MlflowClient()


def progress_line(it: int, total: int, m: dict[str, float], agents: list[str] | None = None) -> str:
    """One line per iteration; a multi-agent run adds one line per agent."""
    g = lambda k: m.get(k, float("nan"))
    speed = f"{g('perf/sample_tokens_per_s'):.0f} tok/s | sample {g('perf/sample_s'):.0f}s learn {g('perf/learn_s'):.0f}s sync {g('perf/sync_s'):.1f}s"
    if agents:
        return "\n".join([f"it {it:>3}/{total} | {speed}"] + [f"    {agent}: {_policy_summary(agent_metrics(m, agent))}" for agent in agents])
    return f"it {it:>3}/{total} | {_policy_summary(m)} | {speed}"


def _policy_summary(m: dict[str, float]) -> str:
    g = lambda k: m.get(k, float("nan"))
    signal = f" signal {m['rollout/groups_with_signal']:.2f}" if "rollout/groups_with_signal" in m else ""  # GRPO only
    return (
        f"reward {g('rollout/reward'):+.3f} em {g('rollout/em'):.3f} f1 {g('rollout/f1'):.3f} "
        f"valid {g('rollout/valid_action_rate'):.2f}{signal} | peak {g('memory/peak_tokens'):.0f} tok | kl {g('loss/kl_ref') if 'loss/kl_ref' in m else 0.0:.4f}"
    )


# -- run directory and state ---------------------------------------------------------------


def _run_dir(config: TrainConfig, resume: bool, allow_config_change: bool = False) -> tuple[Path, dict]:
    root = Path(config.output_dir)
    if resume:
        runs = sorted((p for p in root.glob(f"{config.name}-*") if (p / "run.json").exists()), key=lambda p: p.name)
        if not runs:
            raise FileNotFoundError(f"--resume: no earlier run of {config.name!r} under {root} (looked for {config.name}-*/run.json)")
        run_dir = runs[-1]
        saved = run_dir / "config.json"
        if saved.exists() and not allow_config_change:
            # more iterations is what resuming is often for; anything else would silently mix two runs
            differ = config_differences(validate(json.loads(saved.read_text()), TrainConfig, source=str(saved)), config,
                                        ignore=("training.iterations",))
            if differ:
                raise ConfigError(f"--resume: the config differs from the one {run_dir} was started with, at {', '.join(differ)}; "
                                  f"resume with the same config (it is in {saved}), or pass --allow-config-change")
        state = json.loads((run_dir / "run.json").read_text())
        state["checkpoints"] = [c for c in state.get("checkpoints", []) if Path(c).exists()]
        return run_dir, state
    return new_run_dir(config), {"checkpoints": []}


def new_run_dir(config: TrainConfig) -> Path:
    """runs/<name>-<time>/ with the config it ran (a second run in the same second waits)."""
    while True:
        run_dir = Path(config.output_dir) / f"{config.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        try:
            run_dir.mkdir(parents=True, exist_ok=False)
            break
        except FileExistsError:
            time.sleep(1.0)
    (run_dir / "config.json").write_text(json.dumps(config.model_dump(mode="json"), indent=2))
    return run_dir


def _cut_metrics_file(path: Path, last_iteration: int) -> None:
    """Drop the lines of iterations after the restored checkpoint: they run again."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["iteration"] <= last_iteration]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    tmp.replace(path)


def _log_missing_steps(run_id: str, metrics_file: Path) -> None:
    """Log to MLflow the iterations of metrics.jsonl (already cut back to the checkpoint) that
    the run lacks: every iteration's metrics have perf/iteration_s, so its steps are the logged ones."""
    import mlflow

    if not metrics_file.exists():
        return
    logged = {m.step for m in mlflow.MlflowClient().get_metric_history(run_id, "perf/iteration_s")}
    for line in metrics_file.read_text().splitlines():
        if line.strip() and (row := json.loads(line))["iteration"] not in logged:
            tracking.log_metrics({k: v for k, v in row.items() if k != "iteration"}, step=row["iteration"])


def _save_state(run_dir: Path, state: dict) -> None:
    tmp = run_dir / "run.json.tmp"
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(run_dir / "run.json")


def save_atomically(checkpointable, final: Path) -> Path:
    """`checkpointable.save_to_path` (an RLlib Algorithm or LearnerGroup) into a temporary
    folder, renamed over `final` only when complete: an interrupted save never replaces a
    good checkpoint."""
    final = final.resolve()
    tmp = final.with_name(final.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    checkpointable.save_to_path(str(tmp))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return final


def _checkpoint(algo, run_dir: Path, state: dict, keep: int) -> Path:
    final = save_atomically(algo, run_dir / "checkpoints" / f"iter_{algo.training_iteration:04d}")
    state.setdefault("checkpoints", []).append(str(final))
    for old in state["checkpoints"][:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    state["checkpoints"] = state["checkpoints"][-keep:]
    _save_state(run_dir, state)
    log.info("checkpoint %s", final)
    return final


# -- export ---------------------------------------------------------------------------------


def export_policy(learner_group, config: TrainConfig, out: Path, module_id: str | None = None) -> Path:
    """The learner's current policy (one agent's, by module id) as a Hugging Face folder
    (weights + tokenizer), loadable by transformers, vLLM and `mem1 eval` (model.name: <folder>)."""
    import torch

    from policies.models import load_model, load_tokenizer

    from .config import SINGLE_AGENT

    module_id = module_id or SINGLE_AGENT
    # the module's own merged HF state dict: its inference-only state is an adapter alone when agents share an engine
    results = learner_group.foreach_learner(lambda learner: learner.module[module_id].unwrapped().hf_state_dict())  # unwrapped: DDP
    weights = next(iter(results)).get()  # every learner holds the same weights
    model = load_model(config.model.name, dtype=config.model.dtype)
    model.load_state_dict({k: torch.as_tensor(v) for k, v in weights.items()})
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    load_tokenizer(config.model.name).save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(out)
    return out
