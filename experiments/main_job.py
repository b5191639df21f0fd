"""`mem1 main`: the README's main job, base -> SFT -> SFT+GRPO on the default model.

1. SFT warm start (`sft_qa.yaml`): the scripted expert's traces at several N, fine-tuned
   under mem1's masks. Cached under $MEM1_HOME/sft/, keyed by everything that determines
   it (the config and the code that makes and learns the traces), so a second run reuses
   it and a changed config rebuilds it.
2. GRPO from the SFT weights for a few iterations (`train_qa_grpo.yaml`, training.init_from).
3. One evaluation on held-out tasks (`eval_qa.yaml`): mem1 with the base, SFT and SFT+GRPO
   weights (rows mem1, mem1@sft, mem1@sft-grpo), and the other policies of eval_qa.yaml
   (full_context, window(k=2), summary, amem(k=3)) with the SFT weights, at several N; one table, the accuracy and memory plots, and the learning
   curve of the GRPO iterations (learning_curve.png) next to them.
4. `mem1 compare` of the job's own runs (the evaluation and the GRPO run): compare.html next
   to the evaluation's outputs, logged to MLflow (seconds: it reads the store, draws 4 plots).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from . import compare, tracking
from .config import CompareModel, EvalConfig, TrainConfig, load_config
from .evaluate import EvalResult, evaluate
from .report import plot_learning_curve
from .train import TrainResult, train

CONFIGS = Path(__file__).resolve().parent / "configs"
SFT_CONFIG = CONFIGS / "sft_qa.yaml"
TRAIN_CONFIG = CONFIGS / "train_qa_grpo.yaml"
EVAL_CONFIG = CONFIGS / "eval_qa.yaml"
SFT, RL = "sft", "sft-grpo"  # row label suffixes: mem1@sft, mem1@sft-grpo (MLflow keys take no "+")

# The code that decides what an SFT run produces: a change here invalidates the cache.
_SFT_CODE = (
    "envs/data/expert.py", "envs/webshop/expert.py", "envs/qa.py", "envs/protocol.py", "experiments/traces.py",
    "experiments/sft.py", "policies/chat.py", "policies/packer.py", "policies/learner.py", "policies/losses.py",
    "policies/memory.py", "policies/rl_module.py",
)  # fmt: skip
_ROOT = Path(__file__).resolve().parent.parent

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MainResult:
    sft_model: Path
    sft_reused: bool
    train: TrainResult
    eval: EvalResult
    learning_curve: Path
    compare_report: Path


def main_job(sft_config: TrainConfig, train_config: TrainConfig, eval_config: EvalConfig, *, quiet: bool = False, sft_cache: Path | None = None) -> MainResult:
    """SFT (cached), GRPO from it, then evaluate base, SFT and SFT+GRPO side by side."""
    if not (sft_config.training.export_model and train_config.training.export_model):
        raise ValueError("training.export_model=false: the main job evaluates the exported policies; set it true")
    names = {"sft": sft_config.model.name, "train": train_config.model.name, "eval": eval_config.model.name}
    if len(set(names.values())) > 1:
        raise ValueError(f"model.name differs between the configs {names}; the comparison needs one base model")
    sft_model, reused = cached_sft(sft_config, quiet=quiet, root=sft_cache)
    policy = train_config.memory.spec
    trained = train(train_config.model_copy(update={"training": train_config.training.model_copy(update={"init_from": str(sft_model)})}), quiet=quiet)
    eval_config = eval_config.model_copy(update={
        "policies": [policy],  # the base model: only the policy it is compared on
        "compare_models": {
            **eval_config.compare_models,
            SFT: CompareModel(name=str(sft_model), policies=list(dict.fromkeys([policy, *eval_config.policies]))),
            RL: CompareModel(name=str(trained.model_dir), policies=[policy]),
        },
    })
    result = evaluate(eval_config, quiet=quiet)
    curve = plot_learning_curve(trained.history, result.run_dir / "learning_curve.png", f"GRPO from the SFT warm start ({policy})")
    # the report of this job's runs only: the evaluation (and its children) and, when it logged
    # to the same store, the GRPO run; the kind=compare run goes into the evaluation's experiment
    experiments, run_ids = [eval_config.tracking.experiment], [result.mlflow_run_id]
    if tracking.tracking_uri(train_config.tracking.tracking_uri, train_config.output_dir) == result.tracking_uri:
        experiments.append(train_config.tracking.experiment)
        run_ids.append(trained.mlflow_run_id)
    page = compare.compare(result.tracking_uri, experiments, result.run_dir / "compare.html", run_ids=run_ids).path
    if not quiet:
        print(comparison_table(result.rows, policy))
        print(f"SFT warm start: {sft_model}{' (cached)' if reused else ''}")
        print(f"GRPO for {trained.iterations} iterations: {trained.run_dir} (policy: {trained.model_dir})")
        print(f"learning curve: {curve}")
        print(f"comparison report: {page}  (mem1 compare: every run of the store)")
        if trained.history and any(h.get("rollout/groups_with_signal", 1.0) == 0.0 for h in trained.history):
            quiet_its = [h["iteration"] for h in trained.history if h.get("rollout/groups_with_signal", 1.0) == 0.0]
            print(f"note: iterations {quiet_its} had no GRPO group with a reward spread (signal 0): no gradient reached the policy there")
    return MainResult(sft_model, reused, trained, result, curve, page)


def comparison_table(rows: list[dict], policy: str) -> str:
    """EM and valid-action rate of `policy` with the base, SFT and SFT+GRPO weights, per N."""
    labels = [policy, f"{policy}@{SFT}", f"{policy}@{RL}"]
    by = {(r["policy"], r["n"]): r for r in rows}
    ns = sorted({r["n"] for r in rows})
    head = "N   " + "".join(f"{label:>26}" for label in labels)
    lines = [f"{policy}: base -> SFT -> SFT+GRPO (EM / valid-action rate)", head]
    for n in ns:
        cells = []
        for label in labels:
            r = by.get((label, n))
            cells.append(f"{r['eval/em']:.3f} / {r['rollout/valid_action_rate']:.2f}" if r else "-")
        lines.append(f"{n:<4}" + "".join(f"{c:>26}" for c in cells))
    return "\n".join(lines)


def sft_cache_key(config: TrainConfig) -> str:
    """A digest of what determines an SFT run's weights: the config (less its name, output
    folder and tracking), the trace file's bytes when there is one, and the code above."""
    h = hashlib.sha256(json.dumps(config.model_dump(mode="json", exclude={"name", "output_dir", "tracking"}), sort_keys=True).encode())
    if config.sft.traces != "expert":
        h.update(Path(config.sft.traces).read_bytes())
    for rel in _SFT_CODE:
        path = _ROOT / rel
        h.update(rel.encode() + (path.read_bytes() if path.exists() else b""))
    return h.hexdigest()[:16]


def cached_sft(config: TrainConfig, *, quiet: bool = False, root: Path | None = None) -> tuple[Path, bool]:
    """The SFT policy folder for `config`: reused from the cache, or trained and cached.
    Returns (folder, reused)."""
    from policies.models import cache_dir

    from .sft import sft

    root = Path(root) if root is not None else cache_dir() / "sft"
    entry = root / f"{config.name}-{sft_cache_key(config)}"
    if (entry / "model" / "config.json").exists():
        if not quiet:
            print(f"SFT warm start: reusing {entry / 'model'} (same config and code; delete the folder to rebuild)")
        return entry / "model", True
    result = sft(config, quiet=quiet)
    tmp = entry.with_name(entry.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(result.model_dir, tmp / "model")
    (tmp / "run.json").write_text(json.dumps({"run_dir": str(result.run_dir.resolve()), "mlflow_run_id": result.mlflow_run_id, "config": config.model_dump(mode="json")}, indent=2))
    shutil.rmtree(entry, ignore_errors=True)
    tmp.rename(entry)
    return entry / "model", False


def load_configs(sft_path, train_path, eval_path, sft_overrides: list[str], train_overrides: list[str], eval_overrides: list[str]) -> tuple[TrainConfig, TrainConfig, EvalConfig]:
    return load_config(sft_path, TrainConfig, sft_overrides), load_config(train_path, TrainConfig, train_overrides), load_config(eval_path, EvalConfig, eval_overrides)
