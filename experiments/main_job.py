"""`mem1 main`: the README's main job. Train `mem1` with RL for a few iterations on the
default model, then evaluate on the same held-out tasks:

    trained vs untrained    mem1@trained against mem1 (the model before training)
    mem1 vs full context    mem1, full_context and window(k=2) with the untrained model

at several N, in one evaluation run (one table, one pair of plots, one MLflow parent run
with a child per row label), so both comparisons read off the same report. The training
run is its own MLflow run (experiment mem1-train) with a checkpoint and the exported policy.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from .config import EvalConfig, TrainConfig, load_config
from .evaluate import EvalResult, evaluate
from .train import TrainResult, train

CONFIGS = Path(__file__).resolve().parent / "configs"
TRAIN_CONFIG = CONFIGS / "train_qa_grpo.yaml"
EVAL_CONFIG = CONFIGS / "eval_qa.yaml"
TRAINED = "trained"  # row label suffix of the trained policy: mem1@trained

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MainResult:
    train: TrainResult
    eval: EvalResult


def main_job(train_config: TrainConfig, eval_config: EvalConfig, *, quiet: bool = False) -> MainResult:
    """Train, then evaluate the exported policy beside the untrained model."""
    if not train_config.training.export_model:
        raise ValueError("training.export_model=false: the main job evaluates the exported policy; set it true")
    if train_config.model.name != eval_config.model.name:
        raise ValueError(f"model.name differs: train {train_config.model.name!r}, eval {eval_config.model.name!r}; the comparison needs the same base model")
    trained = train(train_config, quiet=quiet)
    policy = train_config.training.memory_policy
    eval_config = eval_config.model_copy(update={
        "compare_models": {**eval_config.compare_models, TRAINED: str(trained.model_dir)},
        "compare_policies": [policy],
    })
    result = evaluate(eval_config, quiet=quiet)
    if not quiet:
        print(f"trained for {trained.iterations} iterations: {trained.run_dir} (policy: {trained.model_dir})")
        print(f"compare {policy}@{TRAINED} with {policy} (trained vs untrained) and {policy} with full_context in the table above")
        if trained.history and all(h.get("rollout/groups_with_signal", 1.0) == 0.0 for h in trained.history):
            print(f"note: no GRPO group had a reward spread in any iteration (signal 0), so no gradient reached the policy and "
                  f"{policy}@{TRAINED} plays like {policy}; train longer (-t training.iterations=50), with larger groups, or a larger model")
    return MainResult(trained, result)


def load_configs(train_path: str | Path, eval_path: str | Path, train_overrides: list[str], eval_overrides: list[str]) -> tuple[TrainConfig, EvalConfig]:
    return load_config(train_path, TrainConfig, train_overrides), load_config(eval_path, EvalConfig, eval_overrides)
