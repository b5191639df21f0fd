"""`mem1 main`: SFT warm start (cached), GRPO from it, then one evaluation with the base, SFT
and SFT+GRPO weights side by side (rows mem1, mem1@sft, mem1@sft-grpo) and the memory
policies with the SFT weights, in one report and one MLflow run, plus the learning curve."""

import mlflow
import pytest

from experiments.config import EvalConfig, TrainConfig, validate
from experiments.main_job import main_job

pytestmark = [pytest.mark.usefixtures("ray_cluster"), pytest.mark.slow]


def configs(tmp_path, model):
    common = {
        "output_dir": str(tmp_path / "runs"),
        "model": {"name": model},
        "data": {"world_size": "small"},
        "env": {"max_turns_cap": 6, "few_shot": False},
        "retriever": {"mode": "local"},
    }
    sft_config = validate({
        **common, "name": "sft", "sampler": {"max_new_tokens": 200},
        "algorithm": {"name": "sft", "lr": 3e-3, "kl_coef": 0.0},
        "sft": {"tasks": {1: 4, 2: 2}, "heldout_tasks": 1, "epochs": 1, "batch_size": 6},
        "tracking": {"experiment": "tests-sft"},
    }, TrainConfig)
    train_config = validate({
        **common, "name": "train",
        "sampler": {"backend": "transformers", "temperature": 1.0, "max_new_tokens": 16},
        "data": {**common["data"], "n_values": [2], "tasks_per_n": 4},
        "algorithm": {"lr": 1e-3, "group_size": 2, "tasks_per_iteration": 2},
        "training": {"iterations": 1},
        "tracking": {"experiment": "tests-train"},
    }, TrainConfig)
    eval_config = validate({
        **common, "name": "eval",
        "policies": ["mem1", "full_context"],
        "sampler": {"backend": "transformers", "max_new_tokens": 16},
        "data": {**common["data"], "n_values": [1, 2], "tasks_per_n": 2},
        "tracking": {"experiment": "tests-eval"},
    }, EvalConfig)
    return sft_config, train_config, eval_config


def test_main_job_sft_then_grpo_then_compares_base_sft_and_rl(tiny_model_dir, tmp_path):
    result = main_job(*configs(tmp_path, tiny_model_dir), quiet=True, sft_cache=tmp_path / "cache")

    assert not result.sft_reused and (result.sft_model / "config.json").exists()
    assert result.train.iterations == 1 and (result.train.model_dir / "config.json").exists()
    assert result.learning_curve.exists() and result.learning_curve.parent == result.eval.run_dir
    assert result.compare_report == result.eval.run_dir / "compare.html" and result.compare_report.exists()
    labels = {(r["policy"], r["n"]) for r in result.eval.rows}
    expected = {"mem1", "mem1@sft", "full_context@sft", "mem1@sft-grpo"}
    assert labels == {(p, n) for p in expected for n in (1, 2)}
    # each model really played: same first context, other weights -> other log-probs
    first_logp = {ep.info["policy"]: ep.turns[0].logp for ep in result.eval.episodes if ep.turns and ep.info["n"] == 1}
    assert first_logp["mem1@sft"] != first_logp["mem1"]
    # GRPO started from the SFT weights: they moved only if some group had a reward spread
    # (the eval batches each model's episodes with other policies' ones, so equal weights give
    # log-probs equal only up to float noise from padding: compare with a tolerance)
    moved = result.train.history[0]["rollout/groups_with_signal"] > 0
    shift = max(abs(a - b) for a, b in zip(first_logp["mem1@sft-grpo"], first_logp["mem1@sft"]))
    assert (shift > 1e-3) == moved, shift

    client = mlflow.MlflowClient(tracking_uri=result.eval.tracking_uri)
    children = client.search_runs(
        [client.get_run(result.eval.mlflow_run_id).info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{result.eval.mlflow_run_id}'",
    )
    by_label = {r.data.tags["model"] + "/" + r.data.tags["memory_policy"]: r for r in children}
    assert set(by_label) == {"base/mem1", "sft/mem1", "sft/full_context", "sft-grpo/mem1"}
    assert by_label["sft-grpo/mem1"].data.params["model.name"] == str(result.train.model_dir)
    assert by_label["sft/mem1"].data.params["model.name"] == str(result.sft_model)
    assert [m.step for m in client.get_metric_history(by_label["sft-grpo/mem1"].info.run_id, "eval/em")] == [1, 2]


def test_main_job_rejects_different_base_models(tiny_model_dir, char_model_dir, tmp_path):
    sft_config, train_config, _ = configs(tmp_path, tiny_model_dir)
    eval_config = validate({"output_dir": str(tmp_path), "model": {"name": char_model_dir}}, EvalConfig)
    with pytest.raises(ValueError, match="model.name differs"):
        main_job(sft_config, train_config, eval_config, quiet=True)
