"""`mem1 main`: train, then one evaluation with the trained policy beside the untrained model
(rows mem1@trained and mem1) and beside full context, in one report and one MLflow run."""

import mlflow
import pytest

from experiments.config import EvalConfig, TrainConfig, validate
from experiments.main_job import main_job

pytestmark = [pytest.mark.usefixtures("ray_cluster"), pytest.mark.slow]


def test_main_job_trains_then_compares_trained_untrained_and_full_context(tiny_model_dir, tmp_path):
    common = {
        "output_dir": str(tmp_path / "runs"),
        "model": {"name": tiny_model_dir},
        "data": {"world_size": "small"},
        "env": {"max_turns": 2, "few_shot": False},
    }
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

    result = main_job(train_config, eval_config, quiet=True)

    assert result.train.iterations == 1 and (result.train.model_dir / "config.json").exists()
    labels = {(r["policy"], r["n"]) for r in result.eval.rows}
    assert labels == {(p, n) for p in ("mem1", "full_context", "mem1@trained") for n in (1, 2)}
    # the trained policy really played: same first context, other weights -> other log-probs
    first_logp = {ep.info["policy"]: ep.turns[0].logp for ep in result.eval.episodes if ep.turns}
    assert first_logp["mem1"] != first_logp["mem1@trained"]

    client = mlflow.MlflowClient(tracking_uri=result.eval.tracking_uri)
    children = client.search_runs(
        [client.get_run(result.eval.mlflow_run_id).info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{result.eval.mlflow_run_id}'",
    )
    by_label = {r.data.tags["model"] + "/" + r.data.tags["memory_policy"]: r for r in children}
    assert set(by_label) == {"base/mem1", "base/full_context", "trained/mem1"}
    assert by_label["trained/mem1"].data.params["model.name"] == str(result.train.model_dir)
    assert [m.step for m in client.get_metric_history(by_label["trained/mem1"].info.run_id, "eval/em")] == [1, 2]


def test_main_job_rejects_different_base_models(tiny_model_dir, char_model_dir, tmp_path):
    train_config = validate({"output_dir": str(tmp_path), "model": {"name": tiny_model_dir}}, TrainConfig)
    eval_config = validate({"output_dir": str(tmp_path), "model": {"name": char_model_dir}}, EvalConfig)
    with pytest.raises(ValueError, match="model.name differs"):
        main_job(train_config, eval_config, quiet=True)
