"""`mem1 sft`: supervised fine-tuning on the QA expert's traces through the RL stack's packer
and Learner (the `sft` objective), on the tiny random-init model. Checked: the held-out loss
falls; the run writes its traces, metrics, checkpoint, policy folder and MLflow run; `mem1
train` from that folder starts from its weights (same log-probs before any update); the main
job's SFT cache is reused for the same config and rebuilt after a change; config errors are
one line on the CLI."""

import json

import mlflow
import pytest
import torch

from experiments.cli import main as cli
from experiments.config import TrainConfig, validate
from experiments.main_job import cached_sft
from experiments.sft import sft
from policies.models import load_model
from policies.packer import collate, pack_episode, token_logp


def sft_config(tmp_path, model, **sft):
    return validate({
        "name": "sft", "output_dir": str(tmp_path / "runs"), "model": {"name": model},
        "data": {"world_size": "small"}, "retriever": {"mode": "local"},
        "env": {"few_shot": False, "max_turns_cap": 10}, "sampler": {"max_new_tokens": 200},
        "algorithm": {"name": "sft", "lr": 3e-3, "micro_batch_size": 4, "kl_coef": 0.0},
        "sft": {"tasks": {1: 6, 2: 6}, "heldout_tasks": 2, "epochs": 3, "batch_size": 6, **sft},
        "tracking": {"experiment": "tests-sft"},
    }, TrainConfig)


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory):
    return sft(sft_config(tmp_path_factory.mktemp("sft"), tiny_model_dir), quiet=True)


def test_sft_lowers_heldout_loss_and_writes_its_run(trained):
    heldout = [h["sft/heldout_loss"] for h in trained.history if "sft/heldout_loss" in h]
    assert len(heldout) == 4  # before training and after each of 3 epochs
    assert heldout[-1] < 0.8 * heldout[0], heldout
    assert trained.iterations == 6  # 12 traces / 6 per step x 3 epochs
    for name in ("traces.jsonl", "metrics.jsonl", "run.json", "model/config.json", "checkpoints/final"):
        assert (trained.run_dir / name).exists(), name
    assert len((trained.run_dir / "traces.jsonl").read_text().splitlines()) == 12
    run = mlflow.MlflowClient(tracking_uri=f"sqlite:///{trained.run_dir.parent.resolve() / 'mlflow.db'}").get_run(trained.mlflow_run_id)
    assert run.data.tags["kind"] == "sft" and run.data.params["algorithm.name"] == "sft"
    assert "sft/heldout_loss" in run.data.metrics and run.data.params["sft.train_traces"] == "12"


def test_train_from_the_sft_folder_starts_from_its_weights(trained, tiny_model_dir, tmp_path):
    from experiments.algorithm import build_algorithm_config
    from experiments.env_runner import ACTION_SPACE, OBS_SPACE

    grpo = validate({"model": {"name": tiny_model_dir}, "training": {"init_from": str(trained.model_dir)}, "algorithm": {"kl_coef": 0.0}}, TrainConfig)
    learners = build_algorithm_config(grpo.starting_weights()).build_learner_group(spaces={"default_policy": (OBS_SPACE, ACTION_SPACE)})
    try:
        module = learners._learner.module["default_policy"].unwrapped()
        episode = pack_episode(next(iter(_episodes(trained))))
        batch = collate([episode])
        with torch.no_grad():
            learner_logp = module.packed_forward(batch, entropy=False)["logp"]
            sft_logp = token_logp(load_model(str(trained.model_dir)), batch, attention="tiles")
            base_logp = token_logp(load_model(tiny_model_dir), batch, attention="tiles")
        assert torch.allclose(learner_logp, sft_logp, atol=1e-5)
        assert not torch.allclose(learner_logp, base_logp, atol=1e-2)
    finally:
        learners.shutdown()


def _episodes(result):
    from experiments.traces import read_traces
    from policies.chat import ChatFormat
    from policies.memory import make_memory_policy
    from policies.models import load_tokenizer

    return read_traces(result.run_dir / "traces.jsonl", ChatFormat(load_tokenizer(str(result.model_dir))), make_memory_policy("mem1"))


def test_sft_cache_is_reused_and_rebuilt_after_a_change(tiny_model_dir, tmp_path):
    config = sft_config(tmp_path, tiny_model_dir, tasks={1: 2}, heldout_tasks=0, epochs=1, batch_size=2)
    first, reused = cached_sft(config, quiet=True, root=tmp_path / "cache")
    assert not reused and (first / "config.json").exists()
    again, reused = cached_sft(config, quiet=True, root=tmp_path / "cache")
    assert reused and again == first
    assert len(list((tmp_path / "runs").glob("sft-*"))) == 1  # nothing retrained
    changed, reused = cached_sft(config.model_copy(update={"sft": config.sft.model_copy(update={"epochs": 2})}), quiet=True, root=tmp_path / "cache")
    assert not reused and changed != first
    assert json.loads((changed.parent / "run.json").read_text())["config"]["sft"]["epochs"] == 2


def test_sft_cli_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("algorithm: {name: grpo}\n")
    assert cli(["sft", str(bad)]) == 2
    assert "mem1 sft needs algorithm.name: sft" in capsys.readouterr().err
    bad.write_text(f"algorithm: {{name: sft}}\nretriever: {{mode: local}}\ndata: {{world_size: small}}\nsft: {{traces: {tmp_path / 'none.jsonl'}}}\n")
    assert cli(["sft", str(bad)]) == 2
    assert "none.jsonl does not exist" in capsys.readouterr().err
    bad.write_text("algorithm: {name: sft}\nsft: {tasks: {0: 3}}\n")
    assert cli(["sft", str(bad)]) == 2
    assert "sft.tasks" in capsys.readouterr().err
