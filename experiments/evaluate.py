"""`mem1 eval CONFIG`: compare memory policies on N-objective QA.

For every memory policy and every N it composes tasks, plays them all in one batched
rollout (episodes of all policies and N share each sampler call), then the same tasks once
per entry of `compare_models` (e.g. a trained policy; rows named <policy>@<label>), one
sampler at a time, and writes:

    runs/<name>-<time>/episodes.jsonl   every turn: context ids, output, observation, info
    runs/<name>-<time>/summary.csv      one row per (policy, N); the console table
    runs/<name>-<time>/summary.json     the same, plus config and timings
    runs/<name>-<time>/accuracy_vs_n.png, peak_tokens_vs_n.png

and logs one MLflow parent run (config as params, the files above as artifacts) with a
child run per row label (memory policy, or policy@model) whose metrics are logged with step = N.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from policies.chat import ChatFormat
from policies.memory import make_memory_policy
from policies.models import kv_bytes_per_token, load_tokenizer, model_info, resolve_model
from policies.records import Episode

from . import registry, report, tracking
from .components import build_sampler, sampling_params
from .domains import Domain, make_domain
from .config import EvalConfig, flat_params
from .rollout import EpisodeRequest, RolloutStats, rollout

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalResult:
    run_dir: Path
    rows: list[dict]
    episodes: list[Episode]
    mlflow_run_id: str | None
    tracking_uri: str
    wall_s: float


def evaluate(config: EvalConfig, *, sampler=None, domain: Domain | None = None, quiet: bool = False) -> EvalResult:
    """Run the evaluation of `config`. A ready `sampler` and an open `domain` may be passed
    in (training evaluates its own policy this way); otherwise they are built from the config."""
    t_start = time.perf_counter()
    config = registry.resolve_config(config)
    run_dir = Path(config.output_dir) / f"{config.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir.mkdir(parents=True, exist_ok=True)
    tracking.quiet()
    tokenizer = load_tokenizer(config.model.name)
    chat = ChatFormat(tokenizer, config.model.chat_mode, config.model.system_prompt)
    model_config = _model_config(config.model.name)
    kv_bytes = kv_bytes_per_token(model_config, 2) if model_config is not None else None

    # (row label suffix, model, policies): the config's model first, then compare_models; one
    # sampler at a time, so two vLLM engines never hold memory together.
    models = config.models()
    episodes: list[Episode] = []
    stats = RolloutStats()
    with contextlib.ExitStack() as stack:
        if domain is None:
            domain = stack.enter_context(make_domain(config))
        tasks = domain.tasks(config.data.split)
        total = sum(len(specs) * sum(map(len, tasks.values())) for _, _, specs in models)
        log.info("evaluating %d episodes (%s): policies %s, N %s, models %s", total, config.env.kind, config.policies, sorted(tasks), [m for _, m, _ in models])
        with tqdm(total=total, desc="episodes", unit="ep", disable=quiet, dynamic_ncols=True) as bar:
            def on_end(ep: Episode) -> None:
                bar.update(1)
                bar.set_postfix(turns=stats.turns, tok_s=f"{stats.tokens_per_s:.0f}")

            for suffix, model_name, specs in models:
                with contextlib.ExitStack() as model_stack:
                    model_sampler = sampler if not suffix else None
                    if suffix and load_tokenizer(model_name).get_vocab() != tokenizer.get_vocab():
                        raise ValueError(f"compare_models{suffix.replace('@', '.')}={model_name!r}: its tokenizer differs from model.name's; compared models must share one (e.g. a policy trained from model.name)")
                    if model_sampler is None:
                        model_config = config.model.model_copy(update={"name": model_name})
                        model_sampler = build_sampler(model_config, config.sampler, tokenizer, seed=config.seed)
                        model_stack.callback(model_sampler.close)
                    requests = [
                        EpisodeRequest(
                            task=task,
                            env=domain.make_env(n),
                            memory=make_memory_policy(spec),
                            seed=config.seed,
                            tags={"policy": spec + suffix, "n": n},
                        )
                        for spec in specs
                        for n, ts in sorted(tasks.items())
                        for task in ts
                    ]
                    episodes += rollout(
                        requests, model_sampler, chat, sampling_params(config.sampler),
                        max_model_len=config.sampler.max_model_len, kv_bytes_per_token=kv_bytes,
                        on_episode_end=on_end, stats=stats,
                    )

    rows = report.aggregate(episodes)
    wall = time.perf_counter() - t_start
    files = _write_outputs(run_dir, config, rows, episodes, stats, wall)
    run_id, uri = _log_mlflow(config, run_dir, rows, stats, files, wall)
    if not quiet:
        print()
        print(report.format_table(rows))
        print(f"\nwall time {wall:.0f} s, {stats.generated_tokens} tokens generated at {stats.tokens_per_s:.1f} tok/s")
        print(f"outputs: {run_dir}")
        print(f"plots:   {files['accuracy_plot']}\n         {files['memory_plot']}")
        print(f"MLflow:  run {run_id} in {uri}\n         browse: mlflow ui --backend-store-uri {uri}")
    return EvalResult(run_dir, rows, episodes, run_id, uri, wall)


def _model_config(name: str):
    try:
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(resolve_model(name))
    except (OSError, ValueError):
        return None


def _write_outputs(run_dir: Path, config: EvalConfig, rows, episodes, stats: RolloutStats, wall: float) -> dict[str, Path]:
    files = {
        "episodes": report.write_episodes_jsonl(episodes, run_dir / "episodes.jsonl"),
        "summary_csv": report.write_csv(rows, run_dir / "summary.csv"),
        "accuracy_plot": report.plot_vs_n(rows, run_dir / "accuracy_vs_n.png", _accuracy_metrics(rows), "Accuracy per objective vs number of objectives"),
        "memory_plot": report.plot_vs_n(rows, run_dir / "peak_tokens_vs_n.png", ["memory/peak_tokens", "memory/mean_tokens"], "Tokens per model call vs number of objectives"),
    }
    summary = {
        "config": config.model_dump(mode="json"),
        "model": model_info(config.model.name),
        "rows": rows,
        "wall_s": wall,
        "generated_tokens": stats.generated_tokens,
        "tokens_per_s": stats.tokens_per_s,
        "sample_s": stats.sample_s,
        "env_s": stats.env_s,
        "sampler_calls": stats.sampler_calls,
    }
    files["summary_json"] = run_dir / "summary.json"
    files["summary_json"].write_text(json.dumps(summary, indent=2, default=str))
    (run_dir / "config.yaml").write_text(_yaml(config))
    files["config"] = run_dir / "config.yaml"
    return files


def _accuracy_metrics(rows: list[dict]) -> list[str]:
    """What the accuracy plot shows: the env's own task outcome where it reports one
    (WebShop's success rate and score), else EM and F1."""
    outcomes = [m for m in report.OUTCOME_METRICS if rows and m in rows[0]]
    return outcomes or ["eval/em", "eval/f1"]


def _yaml(config: EvalConfig) -> str:
    import yaml

    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def _log_mlflow(config: EvalConfig, run_dir: Path, rows, stats: RolloutStats, files: dict[str, Path], wall: float):
    exp_id = tracking.setup(config.tracking.tracking_uri, config.output_dir, config.tracking.experiment)
    uri = tracking.tracking_uri(config.tracking.tracking_uri, config.output_dir)
    params = {**flat_params(config), "model.path": resolve_model(config.model.name)}
    with tracking.run(exp_id, config.tracking.run_name or run_dir.name, params=params, tags={"kind": "eval", "run_dir": str(run_dir.resolve())}) as parent:
        tracking.log_metrics({"perf/wall_s": wall, "perf/tokens_per_s": stats.tokens_per_s, "perf/generated_tokens": stats.generated_tokens})
        tracking.log_artifacts(list(files.values()))
        for label in dict.fromkeys(r["policy"] for r in rows):  # e.g. mem1, full_context, mem1@trained
            policy_rows = [r for r in rows if r["policy"] == label]
            spec, _, model_label = label.partition("@")
            model_name = next(name for suffix, name, _ in config.models() if suffix == (f"@{model_label}" if model_label else ""))
            child_params = {"memory_policy": spec, "model.name": model_name, "model.label": model_label or "base", "data.tasks_per_n": config.data.tasks_per_n}
            with tracking.run(exp_id, f"{run_dir.name}/{label}", params=child_params, tags={"kind": "eval", "memory_policy": spec, "model": model_label or "base"}, parent_run_id=parent.info.run_id):
                for r in policy_rows:
                    tracking.log_metrics({k: v for k, v in r.items() if "/" in k}, step=int(r["n"]))
        return parent.info.run_id, uri
