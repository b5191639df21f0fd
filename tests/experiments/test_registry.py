"""The MLflow model registry on a real SQLite store: register a folder or a run, alias a
version, resolve `models:/NAME@ALIAS` to a folder that computes the same log-probs, and the
errors a wrong reference or source gets."""

import json
import shutil

import mlflow
import pytest
import torch

from experiments import registry, tracking
from experiments.cli import main as cli
from experiments.config import EvalConfig, TrainConfig, validate
from policies.models import load_model


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("MEM1_HOME", str(tmp_path / "home"))  # the resolved folders go here
    monkeypatch.setattr(tracking, "_ENV_TRACKING_URI", None)  # whatever the machine has set
    return tracking.default_tracking_uri(tmp_path / "runs")


def _logp(folder: str) -> torch.Tensor:
    model = load_model(folder)
    ids = torch.arange(3, 40).unsqueeze(0)
    with torch.no_grad():
        return model(ids).logits.log_softmax(-1)[0, :-1].gather(-1, ids[0, 1:, None])[:, 0]


def test_register_alias_and_resolve_give_the_same_log_probs(tiny_model_dir, store, tmp_path):
    v1 = registry.register(tiny_model_dir, "qa-mem1", store)
    v2 = registry.register(tiny_model_dir, "qa-mem1", store, alias="champion")
    assert (v1.version, v2.version) == (1, 2) and v2.aliases == ("champion",)
    assert v1.run_id != v2.run_id  # a bare folder: a fresh run in the registry experiment each time
    client = mlflow.MlflowClient(tracking_uri=store)
    assert client.get_experiment(client.get_run(v1.run_id).info.experiment_id).name == registry.REGISTRY_EXPERIMENT

    registry.set_alias("qa-mem1", 1, "champion", store)  # the alias moves
    listed = {v.version: v.aliases for v in registry.list_versions(store, "qa-mem1")}
    assert listed == {1: ("champion",), 2: ()}

    folder = registry.resolve("models:/qa-mem1@champion", store)
    assert registry.resolve("models:/qa-mem1/1", store) == folder  # same version: same cached folder
    assert registry.resolve("models:/qa-mem1/2", store) != folder
    assert torch.equal(_logp(folder), _logp(tiny_model_dir))

    # a config naming the registry gets plain folders everywhere a model is named
    config = validate({"output_dir": str(tmp_path / "runs"), "model": {"name": "models:/qa-mem1@champion"},
                       "compare_models": {"v2": "models:/qa-mem1/2", "plain": tiny_model_dir}}, EvalConfig)
    resolved = registry.resolve_config(config)
    assert resolved.model.name == folder and resolved.compare_models["plain"] == tiny_model_dir
    assert resolved.compare_models["v2"] == registry.resolve("models:/qa-mem1/2", store)
    train = validate({"output_dir": str(tmp_path / "runs"), "training": {"init_from": "models:/qa-mem1@champion"}}, TrainConfig)
    assert registry.resolve_config(train).training.init_from == folder


def test_a_run_folder_registers_into_its_own_mlflow_run(tiny_model_dir, store, tmp_path):
    """A `mem1 train`/`mem1 sft` run folder (run.json + model/) links the version to the run."""
    exp = tracking.setup(store, tmp_path / "runs", "tests-train")
    run_id = mlflow.MlflowClient(tracking_uri=store).create_run(exp).info.run_id
    run_dir = tmp_path / "runs" / "train_qa_grpo-20260101-000000"
    shutil.copytree(tiny_model_dir, run_dir / "model")
    (run_dir / "run.json").write_text(json.dumps({"mlflow_run_id": run_id, "checkpoints": []}))

    assert cli(["registry", "register", str(run_dir), "--name", "qa", "--alias", "champion", "--output-dir", str(tmp_path / "runs")]) == 0
    (version,) = registry.list_versions(store, "qa")
    assert version.run_id == run_id and version.aliases == ("champion",) and version.source == str(run_dir.resolve())


def test_registry_errors_name_the_reference_or_source(tiny_model_dir, store, tmp_path, capsys):
    registry.register(tiny_model_dir, "qa", store)
    with pytest.raises(registry.RegistryError, match=r"models:/qa@best: not in the registry.*registered: \['qa/1'\]"):
        registry.resolve("models:/qa@best", store)
    with pytest.raises(registry.RegistryError, match="models:/NAME@ALIAS or models:/NAME/VERSION"):
        registry.resolve("models:/qa/latest/x", store)
    with pytest.raises(registry.RegistryError, match="reserved"):
        registry.set_alias("qa", 1, "v2", store)
    with pytest.raises(registry.RegistryError, match="qa version 7"):
        registry.set_alias("qa", 7, "champion", store)
    (tmp_path / "empty").mkdir()
    with pytest.raises(registry.RegistryError, match="neither a run folder"):
        registry.register(tmp_path / "empty", "qa", store)
    run_dir = tmp_path / "crashed-run"
    run_dir.mkdir()
    (run_dir / "run.json").write_text("{}")
    with pytest.raises(registry.RegistryError, match="no exported policy"):
        registry.register(run_dir, "qa", store)
    # the command line prints the error, no traceback
    assert cli(["registry", "alias", "qa", "9", "champion", "--tracking-uri", store]) == 2
    assert "qa version 9" in capsys.readouterr().err


def test_tracking_uri_order_config_then_environment_then_runs(tmp_path, monkeypatch):
    """`tracking.tracking_uri` wins, then the MLFLOW_TRACKING_URI the process started with (a
    cluster job's server), then <output_dir>/mlflow.db; MLflow's own write of that variable
    (set_tracking_uri sets it for subprocesses) does not count as the user's."""
    monkeypatch.setattr(tracking, "_ENV_TRACKING_URI", None)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'other.db'}")
    assert tracking.tracking_uri(None, tmp_path) == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    monkeypatch.setattr(tracking, "_ENV_TRACKING_URI", "http://mlflow.example:5000")
    assert tracking.tracking_uri(None, tmp_path) == "http://mlflow.example:5000"
    assert tracking.tracking_uri("sqlite:////data/mlflow.db", tmp_path) == "sqlite:////data/mlflow.db"
