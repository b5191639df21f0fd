"""Learning: does GRPO from the SFT warm start beat SFT alone, past the SFT training horizon?
The paper's claim (arXiv 2506.15841: SFT collapses beyond the N it was trained on, RL generalises),
tested at CPU scale. Target:

    SFT+GRPO EM > SFT-only EM at N = 4 and at N = 8 by more than two standard errors.

    python -m experiments.bench.learning                          # 40 min of GRPO, eval every 10 min
    python -m experiments.bench.learning --budget-min 20 --eval-every-min 10 --tasks-per-n 16
    python -m experiments.bench.learning --final-model   # the last evaluated policy folder of the result

1. The SFT start: the main job's cached warm start (`sft_qa.yaml` through
   `main_job.cached_sft`, trained here if the cache lacks it), or `--sft-model FOLDER`.
2. Held-out evaluation of the SFT policy under mem1, greedy, at N = 1, 2, 4, 8 on the test
   split (`eval_qa.yaml`, `--tasks-per-n` tasks per N, the same tasks at every evaluation).
3. GRPO from it (`train_qa_grpo.yaml`, N = 2, `training.init_from` = the SFT folder) in
   chunks, each followed by an export of the policy and an evaluation on the same tasks:
   the first chunk is 2 iterations (it measures the iteration time, and gives an early
   point of the curve), every later one the whole iterations that fit `--eval-every-min`
   more minutes of training wall time (the run resumes from its own checkpoint, so one run
   grows). It stops once `--budget-min` minutes of training are spent. Evaluation time is
   not counted in the budget.

Standard errors: over tasks, of the per-task mean EM / F1 / valid-action rate; the EM gain
over SFT uses the paired per-task difference (same tasks, both greedy), whose standard
error is the one the target compares against.

Writes experiments/bench/results/learning.json (every evaluation with its standard errors,
the per-iteration training metrics, the headline, machine, model, command) and
learning.png (held-out EM per N against training minutes, and the training reward / signal
per iteration). The run folders (training run, evaluations, MLflow store) go under
--output-dir.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import time
from pathlib import Path
from typing import Any, Sequence

from experiments.bench import RESULTS_DIR, command_line, contention_note, machine_info, package_versions, write_json

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TARGET_N = (4, 8)  # where GRPO must beat SFT alone (beyond the N = 2 it trains on)
TARGET_SE = 2.0

log = logging.getLogger(__name__)


def _mean_se(values: Sequence[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return mean, se


def per_task(episodes) -> dict[int, dict[str, dict[str, float]]]:
    """{N: {task_id: {em, f1, valid}}} of one evaluation's episodes."""
    from policies.records import valid_action_rate

    out: dict[int, dict[str, dict[str, float]]] = {}
    for ep in episodes:
        valid = valid_action_rate(ep)
        out.setdefault(int(ep.info["n"]), {})[str(ep.info["task_id"])] = {
            "em": float(ep.info.get("em_mean", 0.0)), "f1": float(ep.info.get("f1_mean", 0.0)), "valid": valid,
        }
    return out


def summarise(tasks: dict[int, dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Per N: mean and standard error of EM, F1 and valid-action rate over tasks."""
    out = {}
    for n, by_task in sorted(tasks.items()):
        row: dict[str, float] = {"tasks": len(by_task)}
        for key in ("em", "f1", "valid"):
            row[key], row[f"{key}_se"] = _mean_se([v[key] for v in by_task.values()])
        out[str(n)] = row
    return out


def paired_gain(after: dict[int, dict[str, dict[str, float]]], before: dict[int, dict[str, dict[str, float]]], n: int) -> dict[str, Any]:
    """EM(after) - EM(before) at N over the tasks both played, with the paired standard error."""
    common = sorted(set(after.get(n, {})) & set(before.get(n, {})))
    if not common:
        return {"n": n, "tasks": 0, "gain": None, "se": None, "z": None, "met": False}
    diffs = [after[n][t]["em"] - before[n][t]["em"] for t in common]
    gain, se = _mean_se(diffs)
    z = gain / se if se and se > 0 else (math.inf if gain > 0 else 0.0)
    return {"n": n, "tasks": len(common), "gain": gain, "se": se, "z": z, "met": bool(z > TARGET_SE)}


def headline(sft_tasks, final_tasks, final_iteration: int) -> dict[str, Any]:
    checks = [paired_gain(final_tasks, sft_tasks, n) for n in TARGET_N]
    return {
        "target": f"SFT+GRPO EM > SFT-only EM at N = {', '.join(map(str, TARGET_N))} by more than {TARGET_SE:g} standard errors (paired over tasks)",
        "final_iteration": final_iteration,
        "checks": checks,
        "met": all(c["met"] for c in checks),
    }


def plot(result: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    evals = result["evaluations"]
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    ns = sorted({int(n) for e in evals for n in e["by_n"]})
    for n in ns:
        pts = [(e["train_minutes"], e["by_n"][str(n)]) for e in evals if str(n) in e["by_n"]]
        axes[0].errorbar([p[0] for p in pts], [p[1]["em"] for p in pts], yerr=[p[1]["em_se"] for p in pts], marker="o", capsize=3, label=f"N = {n}")
        axes[1].errorbar([p[0] for p in pts], [p[1]["valid"] for p in pts], yerr=[p[1]["valid_se"] for p in pts], marker="o", capsize=3, label=f"N = {n}")
    for ax, title in zip(axes[:2], ("held-out EM (mem1, greedy)", "held-out valid-action rate")):
        ax.set_xlabel("GRPO training minutes (0 = SFT only)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    history = result["training"]["history"]
    its = [h["iteration"] for h in history]
    for key, label in (("rollout/reward", "reward"), ("rollout/f1", "F1"), ("rollout/groups_with_signal", "groups with signal")):
        if any(key in h for h in history):
            axes[2].plot(its, [h.get(key, float("nan")) for h in history], marker=".", label=label)
    axes[2].set_xlabel("GRPO iteration")
    axes[2].set_title(f"training rollouts (N = {','.join(map(str, result['settings']['train_n']))})")
    axes[2].grid(alpha=0.3)
    axes[2].legend(fontsize=8)
    fig.suptitle(f"SFT -> SFT+GRPO on {result['model']['model']} ({result['machine']['cores']} CPU cores)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _evaluate(model: str, args, output_dir: Path, label: str):
    from experiments.config import EvalConfig, load_config
    from experiments.evaluate import evaluate

    overrides = [
        f"name=learning-{label}", f"output_dir={output_dir}", f"model.name={model}", "policies=[mem1]",
        f"data.n_values={json.dumps(sorted(set(args.n)))}", f"data.tasks_per_n={args.tasks_per_n}", "sampler.temperature=0.0",
    ]
    result = evaluate(load_config(CONFIGS / "eval_qa.yaml", EvalConfig, overrides), quiet=True)
    return per_task(result.episodes), result.wall_s, overrides


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-min", type=float, default=40.0, help="GRPO training wall time in minutes (default 40)")
    parser.add_argument("--eval-every-min", type=float, default=10.0, help="evaluate after about this many more training minutes (default 10)")
    parser.add_argument("--n", type=int, nargs="+", default=[1, 2, 4, 8], help="held-out objective counts (default 1 2 4 8)")
    parser.add_argument("--tasks-per-n", type=int, default=32, help="held-out tasks per N (default 32)")
    parser.add_argument("--sft-model", default=None, help="the SFT folder to start from (default: the main job's cached warm start)")
    parser.add_argument("--train-override", "-o", action="append", default=[], help="an override of train_qa_grpo.yaml, e.g. -o algorithm.lr=2e-5")
    parser.add_argument("--output-dir", type=Path, default=Path("runs/bench"), help="where the run folders go")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "learning.json", help="the result JSON (the PNG goes next to it)")
    parser.add_argument("--final-model", action="store_true", help="print the policy folder of the last evaluation in --out and exit (make bench hands it to memory_scaling)")
    args = parser.parse_args(argv)
    if args.final_model:
        print(json.loads(args.out.read_text())["evaluations"][-1]["model"])
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    from experiments.config import TrainConfig, load_config
    from experiments.main_job import SFT_CONFIG, TRAIN_CONFIG, cached_sft
    from experiments.train import train
    from policies.models import model_info

    t_start = time.perf_counter()
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    loads = [machine_info().get("load_avg_1_5_15", [0.0])[0]]
    out_dir = args.output_dir / f"learning-{time.strftime('%Y%m%d-%H%M%S')}"
    sft_model = args.sft_model or str(cached_sft(load_config(SFT_CONFIG, TrainConfig))[0])
    base_train = load_config(TRAIN_CONFIG, TrainConfig, [f"output_dir={out_dir}", f"training.init_from={sft_model}", *args.train_override])

    result: dict[str, Any] = {
        "benchmark": "learning",
        "started": started,
        "command": command_line("experiments.bench.learning", argv),
        "model": {**model_info(base_train.model.name), "sft_start": sft_model},
        "settings": {
            "budget_min": args.budget_min, "eval_every_min": args.eval_every_min, "eval_n": sorted(set(args.n)),
            "tasks_per_n": args.tasks_per_n, "train_n": base_train.data.n_values, "train_overrides": args.train_override,
            "algorithm": base_train.algorithm.model_dump(mode="json"), "trainable_layers": base_train.training.trainable_layers,
            "episodes_per_iteration": base_train.algorithm.tasks_per_iteration * base_train.algorithm.group_size,
        },
        "evaluations": [],
        "training": {"history": [], "train_s": 0.0},
    }

    def record(model: str, label: str, iteration: int, train_s: float):
        tasks, wall, overrides = _evaluate(model, args, out_dir, label)
        result["evaluations"].append({"label": label, "iteration": iteration, "train_minutes": round(train_s / 60, 2), "eval_s": round(wall, 1), "by_n": summarise(tasks), "model": model})
        result["equivalent_eval"] = "mem1 eval experiments/configs/eval_qa.yaml " + " ".join(f"-o '{o}'" for o in overrides[2:])
        loads.append(machine_info().get("load_avg_1_5_15", [0.0])[0])
        print(f"{label}: " + "  ".join(f"N={n} EM {r['em']:.3f}±{r['em_se']:.3f} valid {r['valid']:.2f}" for n, r in result["evaluations"][-1]["by_n"].items()), flush=True)
        return tasks

    sft_tasks = record(sft_model, "sft", 0, 0.0)
    final_tasks, train_s, iteration = sft_tasks, 0.0, 0
    startup_s = 0.0  # each chunk's start-up (Ray, vLLM engine, checkpoint restore), measured by the last one
    budget_s, chunk_s = args.budget_min * 60, args.eval_every_min * 60
    while train_s < budget_s:
        chunk_end = min(train_s + chunk_s, budget_s)
        # Whole iterations: how many fit the chunk, from the iterations' own time so far
        # (perf/iteration_s; 2 to start) and the chunk start-up.
        times = [h["perf/iteration_s"] for h in result["training"]["history"] if "perf/iteration_s" in h]
        per_it = sum(times) / len(times) if times else None
        room = chunk_end - train_s - startup_s
        if per_it and room < per_it / 2:  # less than half an iteration left: done
            break
        more = max(1, round(room / per_it)) if per_it else 2
        config = base_train.model_copy(update={"training": base_train.training.model_copy(update={"iterations": iteration + more, "checkpoint_every": more})})
        t0 = time.perf_counter()
        trained = train(config, resume=iteration > 0, quiet=True)
        chunk_wall = time.perf_counter() - t0
        train_s += chunk_wall
        iteration = trained.iterations
        result["training"]["history"] += trained.history
        startup_s = max(0.0, chunk_wall - sum(h.get("perf/iteration_s", 0.0) for h in trained.history))
        result["training"]["train_s"] = round(train_s, 1)
        result["training"]["run_dir"] = str(trained.run_dir)
        final_tasks = record(str(trained.model_dir), f"sft-grpo-it{iteration}", iteration, train_s)
        result["headline"] = headline(sft_tasks, final_tasks, iteration)
        result["wall_s"] = round(time.perf_counter() - t_start, 1)
        result["machine"] = machine_info()
        write_json(args.out, result)  # a partial result survives an interrupted benchmark

    result["headline"] = headline(sft_tasks, final_tasks, iteration)
    result["wall_s"] = round(time.perf_counter() - t_start, 1)
    result["machine"] = machine_info()
    result["packages"] = package_versions()
    note = contention_note(loads)
    result["notes"] = [
        "Training wall time counts whole GRPO iterations (sampling, learning, weight sync) and each chunk's start "
        "(Ray, the vLLM engine, the checkpoint restore); evaluations are outside the budget.",
        "Every evaluation plays the same held-out tasks (test split) greedily under mem1, so differences are paired per task.",
        *([note] if note else []),
    ]
    write_json(args.out, result)
    png = plot(result, args.out.with_suffix(".png"))
    print(json.dumps(result["headline"], indent=2))
    print(f"wrote {args.out} and {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
