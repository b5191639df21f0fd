"""`mem1 tune CONFIG`: a Ray Tune sweep over a training config, searched by Optuna.

CONFIG is an ordinary training config (`mem1 train` runs it as is) with a `sweep:` section
(experiments/config.py SweepSection): a search space over any dotted config path,

    sweep:
      metric: rollout/reward      # a metric `mem1 train` logs each iteration; a list = multi-objective
      mode: max
      num_samples: 3
      space:
        algorithm.lr: {loguniform: [1.0e-5, 1.0e-3]}
        algorithm.kl_coef: {choice: [0.0, 0.001, 0.01]}
        data.n_values: {choice: [[1], [2]]}

Each trial is one `train()` of the config with the trial's values (Ray Tune's function
trainable, reporting every iteration's metrics); Optuna's TPE (seeded) proposes the values
behind a concurrency limit, ASHA stops weak trials early by option. The sweep is a parent
MLflow run and every trial's training run its child (the trial's own run, with the flat
params and per-iteration metrics `mem1 train` always logs), so MLflow's compare view lines
trials up; the parent holds the sweep's space, its best trial and `sweep.json`.

    runs/<name>-sweep-<time>/tune/         Ray Tune's experiment (what --resume restores)
    runs/<name>-sweep-<time>/trials/       each trial's run folder (checkpoints, model, metrics)
    runs/<name>-sweep-<time>/sweep.json    every trial's values and last metrics, the best, the Pareto front

`--resume` restores the newest sweep of the config's name: finished trials stay finished,
unfinished ones start again (a trial whose training ended just before the driver died, so
that Tune never recorded it, reports its metrics again instead of retraining). `--address` runs on an existing Ray cluster.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments import tracking
from experiments.config import ConfigError, SweepSection, TrainConfig, validate

log = logging.getLogger(__name__)

# Optuna's categorical choices must be None, bool, int, float or str: other values (lists
# such as data.n_values) travel as JSON text with this prefix and are decoded in the trial.
_JSON = "json:"


class SweepError(ConfigError):
    """A sweep that ran but produced nothing to report (the CLI prints it, exit 2)."""


@dataclass(frozen=True)
class SweepResult:
    sweep_dir: Path
    trials: list[dict[str, Any]]
    best: dict[str, Any] | None
    pareto: list[dict[str, Any]]
    mlflow_run_id: str


# -- the search space -----------------------------------------------------------------------


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    node = data
    *parents, leaf = key.split(".")
    for p in parents:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"sweep.space.{key}: {p} is not a section")
    node[leaf] = value


def _encode(value: Any) -> Any:
    return value if value is None or isinstance(value, (bool, int, float, str)) else _JSON + json.dumps(value)


def _decode(value: Any) -> Any:
    return json.loads(value[len(_JSON):]) if isinstance(value, str) and value.startswith(_JSON) else value


def check_space(base: dict[str, Any], sweep: SweepSection, source: str) -> None:
    """Every value the space can take makes a valid config: the bounds and every choice are
    validated at once, so a wrong key or value fails here, naming it, not in trial 7."""
    for key, spec in sweep.space.items():
        for value in spec.corners():
            data = copy.deepcopy(base)
            _set_dotted(data, key, value)
            try:
                validate(data, TrainConfig, source=f"{source} (sweep.space.{key} = {value!r})")
            except ConfigError as e:
                raise ConfigError(f"sweep.space.{key}: {spec.kind} {spec.values!r} does not fit the config\n{e}") from None


def _optuna_space(sweep: SweepSection) -> dict[str, Any]:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out: dict[str, Any] = {}
    for key, spec in sweep.space.items():
        if spec.kind == "choice":
            out[key] = CategoricalDistribution([_encode(v) for v in spec.values])
        elif spec.kind in ("uniform", "loguniform"):
            out[key] = FloatDistribution(spec.values[0], spec.values[1], log=spec.kind == "loguniform")
        elif spec.kind == "randint":
            out[key] = IntDistribution(spec.values[0], spec.values[1])
        else:  # rejected by SweepSection already
            raise ConfigError(f"sweep.space.{key}: {spec.kind} is not searched by Optuna")
    return out


def _random_space(sweep: SweepSection) -> dict[str, Any]:
    from ray import tune

    kinds = {
        "choice": lambda v: tune.choice([_encode(x) for x in v]),
        "grid": lambda v: tune.grid_search([_encode(x) for x in v]),
        "uniform": lambda v: tune.uniform(v[0], v[1]),
        "loguniform": lambda v: tune.loguniform(v[0], v[1]),
        "randint": lambda v: tune.randint(v[0], v[1] + 1),  # Tune's upper bound is exclusive
    }
    return {key: kinds[spec.kind](spec.values) for key, spec in sweep.space.items()}


# -- one trial ------------------------------------------------------------------------------


def _trial(params: dict[str, Any], *, base: dict[str, Any], trials_dir: str, tracking_uri: str, parent_run_id: str) -> None:
    """One trial: the base config with the trial's values, trained, every iteration reported."""
    import ray
    from ray import tune

    from experiments.train import train

    trial_id = tune.get_context().get_trial_id()
    data = copy.deepcopy(base)
    values = {k: _decode(v) for k, v in params.items()}
    for key, value in values.items():
        _set_dotted(data, key, value)
    data["output_dir"] = trials_dir
    data["name"] = f"{data.get('name', 'train')}-{trial_id}"
    tracking_section = data.setdefault("tracking", {})
    tracking_section.update(tracking_uri=tracking_uri, parent_run_id=parent_run_id, run_name=f"trial-{trial_id}")
    config = validate(data, TrainConfig, source=f"trial {trial_id}")
    node = ray.get_runtime_context().get_node_id()  # where the trial ran (sweep.json), on a cluster too
    report = lambda metrics: tune.report({**metrics, "trial_values": json.dumps(values), "trial_node": node})
    finished = _finished_run(Path(trials_dir), config.name, tracking_uri)
    if finished is not None:
        # the training ended before a killed driver's Tune state recorded it: report it again, do not retrain
        for line in finished:
            report(line)
        return
    train(config, quiet=True, log_each_iteration=True, on_iteration=lambda it, metrics: report(metrics))


def _finished_run(trials_dir: Path, name: str, tracking_uri: str) -> list[dict[str, Any]] | None:
    """The per-iteration metrics of this trial's training run if one ran to its end (its
    MLflow run ended FINISHED, which happens after the model export), else None."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    for run_dir in sorted(trials_dir.glob(f"{name}-*"), reverse=True):
        try:
            run_id = json.loads((run_dir / "run.json").read_text()).get("mlflow_run_id")
            if run_id and client.get_run(run_id).info.status == "FINISHED":
                lines = (run_dir / "metrics.jsonl").read_text().splitlines()
                return [{k: v for k, v in json.loads(line).items() if k != "iteration"} for line in lines if line.strip()]
        except (OSError, ValueError, mlflow.exceptions.MlflowException):  # a run killed before it wrote these
            continue
    return None


# -- the sweep ------------------------------------------------------------------------------


def _absolute(data: dict[str, Any]) -> dict[str, Any]:
    """Paths the trials read, made absolute: Ray runs each trial in a folder of its own."""
    data = copy.deepcopy(data)
    data["output_dir"] = str(Path(data.get("output_dir", "runs")).resolve())
    for section, key in (("model", "name"), ("training", "init_from"), ("sft", "traces"), ("retriever", "corpus")):
        value = data.get(section, {}).get(key)
        if isinstance(value, str) and not value.startswith("models:/") and Path(value).exists():
            data[section][key] = str(Path(value).resolve())
    return data


def _check_same_config(sweep_dir: Path, config: TrainConfig) -> None:
    """--resume continues the sweep that was started: Tune restores its own search space and
    trials, so a config that differs now (the file or the overrides) is refused, naming the keys."""
    import yaml

    from experiments.config import config_differences

    saved_file = sweep_dir / "config.yaml"
    if not saved_file.exists():
        return  # killed before it was written: nothing ran yet
    differ = config_differences(validate(yaml.safe_load(saved_file.read_text()), TrainConfig, source=str(saved_file)), config)
    if differ:
        raise ConfigError(f"--resume: the config differs from the one {sweep_dir} was started with, at {', '.join(differ)}; "
                          f"resume with the same config and overrides (they are in {saved_file}), or start a new sweep")


def _trial_resources(config: TrainConfig):
    """What Ray reserves for one trial: a placement group of RLlib's own bundles for the
    trial's algorithm (its driver, then its env runners and learner, which RLlib places at
    fixed bundle indices), the first one raised to sweep.cpus_per_trial / gpus_per_trial
    (with no env runners the trial's driver samples too). From the base config: a space that
    changes the number of env runners or learners would need a bundle list per trial."""
    from ray import tune

    from experiments.algorithm import build_algorithm_config

    algo = build_algorithm_config(config)
    request = algo.algo_class.default_resource_request(algo)
    bundles = [dict(b) for b in request.bundles]
    bundles[0]["CPU"] = max(bundles[0].get("CPU", 0.0), config.sweep.cpus_per_trial)
    bundles[0]["GPU"] = bundles[0].get("GPU", 0.0) + config.sweep.gpus_per_trial
    return tune.PlacementGroupFactory(bundles, strategy=request.strategy)


def _sweep_dir(config: TrainConfig, resume: bool) -> Path:
    root = Path(config.output_dir).resolve()
    if resume:
        found = sorted(p for p in root.glob(f"{config.name}-sweep-*") if (p / "sweep_state.json").exists())
        if not found:
            raise ConfigError(f"--resume: no earlier sweep of {config.name!r} under {root} (looked for {config.name}-sweep-*/sweep_state.json)")
        return found[-1]
    stamp = time.strftime('%Y%m%d-%H%M%S')
    path, k = root / f"{config.name}-sweep-{stamp}", 1
    while path.exists():  # two sweeps of one config started in the same second
        k += 1
        path = root / f"{config.name}-sweep-{stamp}-{k}"
    path.mkdir(parents=True)
    (path / "sweep_state.json").write_text("{}")  # a sweep killed from here on is the one --resume finds
    return path


def sweep(path: str | Path, overrides: list[str] | None = None, *, resume: bool = False, address: str | None = None,
          quiet: bool = False) -> SweepResult:
    import ray
    import yaml
    from ray import tune

    from experiments.config import load_config

    config: TrainConfig = load_config(path, TrainConfig, overrides)
    s = config.sweep
    if not s.space:
        raise ConfigError(f"{path}: sweep.space is empty; add the dotted config paths to search (see tune/sweep.py)")
    base = _absolute(config.model_dump(mode="json", exclude={"sweep"}, exclude_unset=False))
    check_space(base, s, str(path))

    if s.register_best and not config.training.export_model:
        raise ConfigError("sweep.register_best needs training.export_model: true (the trials' policies as folders)")
    sweep_dir = _sweep_dir(config, resume)
    if resume:
        _check_same_config(sweep_dir, config)
        if not quiet:
            print(f"resuming the sweep in {sweep_dir}")
    uri = tracking.tracking_uri(config.tracking.tracking_uri, config.output_dir)
    experiment_id = tracking.setup(uri, config.output_dir, config.tracking.experiment)  # on the driver, before any trial
    state_file = sweep_dir / "sweep_state.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else {}
    if state.get("tracking_uri", uri) != uri:
        raise ConfigError(f"--resume: {sweep_dir} logged to the MLflow store {state['tracking_uri']}, not {uri}; "
                          "set tracking.tracking_uri (or MLFLOW_TRACKING_URI) to the sweep's store")
    state["tracking_uri"] = uri

    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False, namespace="mem1",
                 # trials run in the driver's folder, not Tune's per-trial one, so relative paths mean what they say
                 runtime_env={"env_vars": {"RAY_CHDIR_TO_TRIAL_DIR": "0"}})
    try:
        with tracking.run(experiment_id, config.tracking.run_name or sweep_dir.name, run_id=state.get("mlflow_run_id"),
                          params={"sweep.space": json.dumps({k: {v.kind: v.values} for k, v in s.space.items()}),
                                  "sweep.metric": ",".join(s.metrics), "sweep.mode": ",".join(s.modes),
                                  "sweep.num_samples": s.num_samples, "sweep.searcher": s.searcher, "sweep.seed": s.seed},
                          tags={"kind": "sweep", "sweep_dir": str(sweep_dir)}) as parent:
            state["mlflow_run_id"] = parent.info.run_id
            if resume:
                _end_interrupted_trials(uri, parent)
            state_file.write_text(json.dumps(state, indent=2))
            (sweep_dir / "config.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json")))
            trainable = tune.with_resources(
                tune.with_parameters(_trial, base=base, trials_dir=str(sweep_dir / "trials"), tracking_uri=uri,
                                     parent_run_id=parent.info.run_id),
                _trial_resources(config))
            tune_dir = sweep_dir / "tune"
            if resume and tune.Tuner.can_restore(str(tune_dir)):
                tuner = tune.Tuner.restore(str(tune_dir), trainable, resume_unfinished=True, resume_errored=True)
            else:
                tune_config, param_space = _tune_setup(s)
                tuner = tune.Tuner(trainable, param_space=param_space, tune_config=tune_config,
                                   run_config=tune.RunConfig(name="tune", storage_path=str(sweep_dir), verbose=0 if quiet else 1))
            grid = tuner.fit()
            _end_interrupted_trials(uri, parent)  # ASHA-stopped or interrupted trials' runs stay RUNNING otherwise
            trials = _trials(grid, s, config.training.iterations, _trial_runs(uri, parent))
            best = _best(trials, s)
            pareto = pareto_front(_finished(trials), s.metrics, s.modes) if len(s.metrics) > 1 else ([best] if best else [])
            summary = {"config": str(path), "sweep_dir": str(sweep_dir), "metric": s.metrics, "mode": s.modes,
                       "space": {k: {v.kind: v.values} for k, v in s.space.items()}, "searcher": s.searcher, "seed": s.seed,
                       "trials": trials, "best": best, "pareto_front": pareto}
            _write_summary(sweep_dir, summary)  # before anything optional below can fail
            if best is not None:
                import mlflow

                tracking.log_metrics({f"best/{k}": v for k, v in best["metrics"].items()})
                mlflow.set_tags({**{f"best.{k}": json.dumps(v) for k, v in best["values"].items()},
                                 "best.trial_id": best["trial_id"], "best.run_id": best.get("mlflow_run_id") or ""})
            try:
                summary["param_importances"] = param_importances(_finished(trials), s)
                plot_importances(summary["param_importances"], sweep_dir / "param_importances.png")
            except Exception as e:  # an analysis, never a reason to lose the sweep's results
                log.warning("parameter importances failed: %s", e)
        # after the parent run: registering logs the model into the trial's own run
        if best is not None and s.register_best:
            best["registered"] = _register_best(best, sweep_dir, base, s.register_best, uri)
        _write_summary(sweep_dir, summary)
        import mlflow

        client = mlflow.MlflowClient(tracking_uri=uri)
        for artifact in ("sweep.json", "config.yaml", "param_importances.png"):
            if (sweep_dir / artifact).exists():
                client.log_artifact(state["mlflow_run_id"], str(sweep_dir / artifact))
    finally:
        if started_ray:
            ray.shutdown()
    failed = [t for t in trials if t["status"] == "ERROR"]
    if not _finished(trials):
        first = failed[0]["error"] if failed else "no trial reported a result"
        raise SweepError(f"sweep {sweep_dir}: no trial finished ({len(failed)} errored; first: {first}); "
                         f"each trial's error.txt is under {sweep_dir / 'tune'}")
    if not quiet:
        print(f"sweep: {len(_finished(trials))} of {len(trials)} trials finished ({len(failed)} errored) in {sweep_dir}")
        if best is not None:
            scores = ", ".join(f"{m} {best['metrics'].get(m, float('nan')):.4f}" for m in s.metrics)
            print(f"best ({scores}): {best['values']}")
    return SweepResult(sweep_dir, trials, best, pareto, state["mlflow_run_id"])


def _end_interrupted_trials(uri: str, parent) -> None:
    """A killed sweep leaves its running trials' MLflow runs RUNNING; Tune starts those trials
    again (new runs), so the old ones are ended as KILLED, not left looking alive."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    stale = client.search_runs([parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}' and attributes.status = 'RUNNING'")
    for run in stale:
        client.set_terminated(run.info.run_id, status="KILLED")


def _register_best(best: dict[str, Any], sweep_dir: Path, base: dict[str, Any], name: str, uri: str) -> str:
    from experiments import registry

    runs = sorted((sweep_dir / "trials").glob(f"{base.get('name', 'train')}-{best['trial_id']}-*"))
    if not runs:
        raise ConfigError(f"sweep.register_best: no run folder of the best trial {best['trial_id']} under {sweep_dir / 'trials'}")
    version = registry.register(runs[-1], name, uri, alias="best")
    return f"models:/{version.name}/{version.version}"


def _tune_setup(s: SweepSection) -> tuple[Any, dict[str, Any]]:
    """(Tune's TuneConfig, the Tuner's param_space). Optuna holds the space itself (Tune's
    param_space then stays empty); random and grid search use Tune's own domains."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter

    single = len(s.metrics) == 1
    metric, mode = (s.metrics[0], s.modes[0]) if single else (None, None)  # Tune takes one metric; Optuna takes the list
    scheduler = ASHAScheduler(time_attr="training_iteration", max_t=s.asha_max_iterations, grace_period=s.asha_grace_period) if s.asha else None
    if s.searcher == "optuna":
        from optuna.samplers import TPESampler
        from ray.tune.search.optuna import OptunaSearch

        searcher = OptunaSearch(space=_optuna_space(s), metric=s.metrics[0] if single else s.metrics,
                                mode=s.modes[0] if single else s.modes, sampler=TPESampler(seed=s.seed, n_startup_trials=_startup_trials(s)))
        return tune.TuneConfig(search_alg=ConcurrencyLimiter(searcher, max_concurrent=s.max_concurrent), scheduler=scheduler,
                               num_samples=s.num_samples, metric=metric, mode=mode), {}
    from ray.tune.search.basic_variant import BasicVariantGenerator

    return tune.TuneConfig(search_alg=BasicVariantGenerator(random_state=s.seed, max_concurrent=s.max_concurrent), scheduler=scheduler,
                           num_samples=s.num_samples, metric=metric, mode=mode), _random_space(s)


def _trial_runs(uri: str, parent) -> dict[str, str]:
    """trial id -> the MLflow run id of its training run (the last FINISHED one, if it ran twice)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    runs = client.search_runs([parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
                              order_by=["attributes.start_time ASC"])
    out: dict[str, str] = {}
    for run in runs:
        name = run.data.tags.get("mlflow.runName", "")
        if name.startswith("trial-") and (run.info.status == "FINISHED" or name[6:] not in out):
            out[name[6:]] = run.info.run_id
    return out


def _startup_trials(s: SweepSection) -> int:
    """Random trials before TPE models the results: Optuna's 10, or half of a small sweep
    (with 4 trials, the default would leave TPE nothing to choose)."""
    return max(1, min(10, s.num_samples // 2))


def _trials(grid, s: SweepSection, iterations: int, runs: dict[str, str]) -> list[dict[str, Any]]:
    out = []
    for result in grid:
        metrics = dict(result.metrics or {})
        values = json.loads(metrics.pop("trial_values", "{}"))
        node = metrics.pop("trial_node", None)
        if not values:  # a trial that failed before its first report
            values = {k: _decode(v) for k, v in (result.config or {}).items() if k in s.space}
        trial_id = metrics.get("trial_id") or Path(result.path).name
        done = metrics.get("training_iteration") == iterations
        out.append({
            "trial_id": trial_id,
            # ERROR: raised; TERMINATED: ran every iteration; STOPPED: ended early (ASHA, or an interrupt)
            "status": "ERROR" if result.error else "TERMINATED" if done else "STOPPED",
            "error": str(result.error).strip().splitlines()[-1] if result.error else None,
            "iterations": metrics.get("training_iteration"),
            "node_id": node,
            "mlflow_run_id": runs.get(trial_id),
            "values": values,
            # the training metrics are the namespaced ones (rollout/*, loss/*, ...); Tune's own are not
            "metrics": {k: v for k, v in metrics.items()
                        if "/" in k and not k.startswith("config/") and isinstance(v, (int, float)) and not isinstance(v, bool)},
        })
    return sorted(out, key=lambda t: t["trial_id"])


def _finished(trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The trials that ran every iteration: the only ones scored, so an errored or stopped
    trial's early numbers never win."""
    return [t for t in trials if t["status"] == "TERMINATED"]


def _write_summary(sweep_dir: Path, summary: dict[str, Any]) -> None:
    tmp = sweep_dir / "sweep.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2, default=str))
    tmp.replace(sweep_dir / "sweep.json")


def _scored(trials: list[dict[str, Any]], metrics: list[str]) -> list[dict[str, Any]]:
    return [t for t in trials if all(isinstance(t["metrics"].get(m), (int, float)) and not math.isnan(t["metrics"][m]) for m in metrics)]


def _best(trials: list[dict[str, Any]], s: SweepSection) -> dict[str, Any] | None:
    """The best finished trial by the first metric (its last reported value)."""
    scored = _scored(_finished(trials), s.metrics[:1])
    if not scored:
        return None
    sign = 1.0 if s.modes[0] == "max" else -1.0
    return max(scored, key=lambda t: sign * t["metrics"][s.metrics[0]])


def pareto_front(trials: list[dict[str, Any]], metrics: list[str], modes: list[str]) -> list[dict[str, Any]]:
    """The trials no other trial beats on every metric (maximise EM, minimise peak tokens, ...)."""
    scored = _scored(trials, metrics)
    signed = [[(1.0 if mode == "max" else -1.0) * t["metrics"][m] for m, mode in zip(metrics, modes)] for t in scored]

    def dominated(i: int) -> bool:
        return any(all(b >= a for a, b in zip(signed[i], signed[j])) and signed[j] != signed[i] for j in range(len(scored)) if j != i)

    return [t for i, t in enumerate(scored) if not dominated(i)]


def param_importances(trials: list[dict[str, Any]], s: SweepSection) -> dict[str, dict[str, float]]:
    """Per objective, Optuna's parameter importances (fANOVA) over the finished trials, from
    a study rebuilt from their values and last metrics (the searcher's own study lives in
    Tune's searcher state; this one works for random search and resumed sweeps alike).
    Empty when fewer than two trials differ."""
    import optuna

    scored = _scored(trials, s.metrics)
    if len({json.dumps(t["values"], sort_keys=True) for t in scored}) < 2:
        return {}
    distributions = _optuna_space(s) if s.searcher == "optuna" else None
    out = {}
    for i, metric in enumerate(s.metrics):
        study = optuna.create_study(direction="maximize" if s.modes[i] == "max" else "minimize")
        for t in scored:
            params = {k: _encode(v) for k, v in t["values"].items()}
            dists = distributions or {k: optuna.distributions.CategoricalDistribution(sorted({_encode(u["values"][k]) for u in scored}, key=str))
                                      for k in params}
            study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=t["metrics"][metric]))
        try:
            out[metric] = optuna.importance.get_param_importances(study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=s.seed))
        except (ValueError, RuntimeError) as e:  # e.g. every trial with the same value
            log.info("no parameter importances for %s: %s", metric, e)
    return out


def plot_importances(importances: dict[str, dict[str, float]], path: Path) -> Path | None:
    if not importances:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(importances), figsize=(5.5 * len(importances), 0.5 + 0.45 * max(len(v) for v in importances.values())), squeeze=False)
    for ax, (metric, values) in zip(axes[0], importances.items()):
        names = list(values)[::-1]
        ax.barh(names, [values[k] for k in names], color="tab:blue")
        ax.set_title(f"importance for {metric}")
        ax.set_xlim(0, 1)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
