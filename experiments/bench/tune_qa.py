"""The CPU sweep: `mem1 tune experiments/configs/tune_qa.yaml` from the main job's SFT warm
start, timed on this machine, with its trials, best configuration and Pareto front.

    python -m experiments.bench.tune_qa                       # 4 trials, 3 GRPO iterations each
    python -m experiments.bench.tune_qa -o sweep.num_samples=2 -o training.iterations=2

1. The SFT start: the main job's cached warm start (`sft_qa.yaml` through
   `main_job.cached_sft`, trained here when the cache lacks it; its time is reported apart).
2. The sweep (tune/sweep.py) over tune_qa.yaml's space with `training.init_from` set to it:
   Ray Tune on a local cluster, Optuna's seeded TPE, one trial at a time on 2 cores.

Writes experiments/bench/results/tune_qa.json: every trial's values, status, iterations and
last metrics, the best trial by the sweep's metric, the Pareto front of (EM up, peak tokens
down) over the trials, the sweep's wall time and per-trial time, machine, versions and the
command. There is no target here: it records what a CPU sweep costs and finds.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

from experiments.bench import RESULTS_DIR, command_line, machine_info, package_versions, write_json

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
FRONT = (("rollout/em", "max"), ("memory/peak_tokens", "min"))  # the memory/quality trade-off

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    from experiments.config import TrainConfig, load_config
    from experiments.main_job import cached_sft
    from tune.sweep import pareto_front, sweep

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(CONFIGS / "tune_qa.yaml"))
    p.add_argument("--sft-model", default=None, help="start from this folder instead of the main job's cached SFT")
    p.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE", help="overrides of the sweep config")
    p.add_argument("--out", default=str(RESULTS_DIR / "tune_qa.json"))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    t0 = time.monotonic()
    sft_model, reused = (Path(args.sft_model), True) if args.sft_model else cached_sft(load_config(CONFIGS / "sft_qa.yaml", TrainConfig))
    sft_s = time.monotonic() - t0
    overrides = [f"training.init_from={sft_model}", *args.override]
    t1 = time.monotonic()
    result = sweep(args.config, overrides)
    sweep_s = time.monotonic() - t1
    front = pareto_front(result.trials, [m for m, _ in FRONT], [mode for _, mode in FRONT])
    done = [t for t in result.trials if t["status"] == "TERMINATED"]
    out = {
        "benchmark": "tune_qa",
        "config": str(Path(args.config).relative_to(Path.cwd()) if Path(args.config).is_relative_to(Path.cwd()) else args.config),
        "overrides": overrides[1:],
        "sft_start": {"folder": str(sft_model), "reused_from_cache": reused, "wall_s": round(sft_s, 1)},
        "wall_s": round(sweep_s, 1),
        "per_trial_s": round(sweep_s / max(len(result.trials), 1), 1),
        "trials_finished": len(done),
        "trials": result.trials,
        "best": result.best,
        "pareto_front_em_vs_peak_tokens": front,
        "sweep_dir": str(result.sweep_dir),
        "mlflow_run_id": result.mlflow_run_id,
        "machine": machine_info(),
        "versions": package_versions(("torch", "transformers", "vllm", "mlflow", "ray", "optuna")),
        "command": command_line("experiments.bench.tune_qa", argv),
    }
    path = write_json(Path(args.out), out)
    print(f"{len(done)}/{len(result.trials)} trials in {sweep_s / 60:.1f} min; best {result.best and result.best['values']}; wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
