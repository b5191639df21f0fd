"""`mem1 tune`: a real Ray Tune sweep, searched by Optuna, over the toy text env with the
tiny character model (seconds per trial); the sweep is a parent MLflow run with one child per
trial, and a bad search-space entry fails before any trial, naming the key."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import yaml

from experiments.config import ConfigError
from tune.sweep import sweep

pytestmark = pytest.mark.slow


def write_config(tmp_path, model_dir, **sweep_section):
    config = {
        "name": "toy", "output_dir": str(tmp_path / "runs"),
        "model": {"name": model_dir},
        "sampler": {"backend": "transformers", "temperature": 1.0, "max_new_tokens": 8},
        "env": {"kind": "toy", "target": "aeiou", "num_tasks": 2},
        "algorithm": {"name": "grpo", "lr": 1e-3, "group_size": 4, "tasks_per_iteration": 2, "kl_coef": 0.0, "micro_batch_size": 8},
        "training": {"iterations": 2, "checkpoint_every": 100, "export_model": False},
        "tracking": {"experiment": "tests-tune"},
        "sweep": {"num_samples": 3, "seed": 0, "metric": "rollout/reward", "mode": "max",
                  "space": {"algorithm.lr": {"loguniform": [1e-4, 1e-2]},
                            "algorithm.kl_coef": {"choice": [0.0, 0.01]},
                            "sampler.max_new_tokens": {"choice": [4, 8]}},
                  **sweep_section},
    }
    path = tmp_path / "tune_toy.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_three_trial_optuna_sweep_logs_a_parent_and_a_child_per_trial(tiny_model_dir, tmp_path):
    """Multi-turn QA over the generated world with the tiny model: Optuna (multi-objective:
    reward up, peak tokens down) over memory budget, N and KL coefficient."""
    config = {
        "name": "qa", "output_dir": str(tmp_path / "runs"),
        "model": {"name": tiny_model_dir},
        "sampler": {"backend": "transformers", "temperature": 1.0, "max_new_tokens": 16},
        "data": {"world_size": "small", "n_values": [2], "tasks_per_n": 4},
        "env": {"max_turns": 3, "few_shot": False},
        "algorithm": {"lr": 1e-4, "group_size": 2, "tasks_per_iteration": 2, "kl_coef": 0.0},
        "training": {"iterations": 2, "checkpoint_every": 100, "export_model": False},
        "tracking": {"experiment": "tests-tune"},
        "sweep": {"num_samples": 3, "seed": 0, "metric": ["rollout/reward", "memory/peak_tokens"], "mode": ["max", "min"],
                  "space": {"memory.budget": {"choice": [None, 8]},
                            "data.n_values": {"choice": [[1], [2]]},
                            "algorithm.kl_coef": {"loguniform": [1e-3, 1e-1]}}},
    }
    path = tmp_path / "tune_qa_tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    result = sweep(path, quiet=True)

    assert len(result.trials) == 3 and all(t["status"] == "TERMINATED" and t["iterations"] == 2 for t in result.trials)
    for t in result.trials:
        assert t["values"]["memory.budget"] in (None, 8) and t["values"]["data.n_values"] in ([1], [2])
        assert 1e-3 <= t["values"]["algorithm.kl_coef"] <= 1e-1
    best = max(result.trials, key=lambda t: t["metrics"]["rollout/reward"])
    assert result.best["metrics"]["rollout/reward"] == best["metrics"]["rollout/reward"]
    signed = {t["trial_id"]: (t["metrics"]["rollout/reward"], -t["metrics"]["memory/peak_tokens"]) for t in result.trials}
    for t in result.trials:  # on the front exactly when no other trial is at least as good on both and better on one
        beaten = any(o[0] >= signed[t["trial_id"]][0] and o[1] >= signed[t["trial_id"]][1] and o != signed[t["trial_id"]]
                     for k, o in signed.items() if k != t["trial_id"])
        assert (t in result.pareto) == (not beaten)
    summary = json.loads((result.sweep_dir / "sweep.json").read_text())
    assert len(summary["trials"]) == 3 and [t["trial_id"] for t in summary["pareto_front"]] == [t["trial_id"] for t in result.pareto]

    uri = f"sqlite:///{(tmp_path / 'runs').resolve() / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    parent = client.get_run(result.mlflow_run_id)
    assert parent.data.tags["kind"] == "sweep" and parent.data.metrics["best/rollout/reward"] == pytest.approx(result.best["metrics"]["rollout/reward"])
    assert {"sweep.json", "config.yaml"} <= {a.path for a in client.list_artifacts(result.mlflow_run_id)}
    children = client.search_runs([parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{result.mlflow_run_id}'")
    assert len(children) == 3
    by_kl = {float(c.data.params["algorithm.kl_coef"]): c for c in children}
    for t in result.trials:  # each child run carries its trial's values as flat params and its metrics per iteration
        child = by_kl[t["values"]["algorithm.kl_coef"]]
        assert child.data.params["memory.budget"] == ("" if t["values"]["memory.budget"] is None else "8")
        assert child.data.params["data.n_values"] == ",".join(map(str, t["values"]["data.n_values"]))
        assert [m.step for m in client.get_metric_history(child.info.run_id, "rollout/reward")] == [1, 2]


def test_pareto_front_and_parameter_importances():
    from experiments.config import SweepSection
    from tune.sweep import param_importances, pareto_front

    def trial(i, em, peak, lr):
        return {"trial_id": f"t{i}", "values": {"algorithm.lr": lr, "memory.budget": [None, 48][i % 2]}, "metrics": {"rollout/em": em, "memory/peak_tokens": peak}}

    trials = [trial(0, 0.5, 400, 1e-5), trial(1, 0.4, 300, 2e-5), trial(2, 0.3, 350, 4e-5), trial(3, 0.6, 500, 8e-5), trial(4, float("nan"), 100, 9e-5)]
    front = pareto_front(trials, ["rollout/em", "memory/peak_tokens"], ["max", "min"])
    assert [t["trial_id"] for t in front] == ["t0", "t1", "t3"]  # t2 is beaten by t1; t4 has no EM
    s = SweepSection(metric="rollout/em", space={"algorithm.lr": {"loguniform": [1e-5, 1e-4]}, "memory.budget": {"choice": [None, 48]}})
    importances = param_importances(trials, s)["rollout/em"]
    assert set(importances) == {"algorithm.lr", "memory.budget"} and sum(importances.values()) == pytest.approx(1.0)


def test_a_bad_search_space_entry_is_named_before_any_trial(char_model_dir, tmp_path):
    bad_key = write_config(tmp_path, char_model_dir, space={"algorithm.learning_rate": {"choice": [1e-3]}})
    with pytest.raises(ConfigError, match=r"(?s)sweep.space.algorithm.learning_rate.*unknown key"):
        sweep(bad_key, quiet=True)
    bad_value = write_config(tmp_path, char_model_dir, space={"algorithm.group_size": {"choice": [4, 0]}})
    with pytest.raises(ConfigError, match=r"(?s)sweep.space.algorithm.group_size.*greater than or equal to 1"):
        sweep(bad_value, quiet=True)
    bad_kind = write_config(tmp_path, char_model_dir, space={"algorithm.lr": {"normal": [0, 1]}})
    with pytest.raises(ConfigError, match=r"sweep.space.algorithm.lr.normal: unknown key"):
        sweep(bad_kind, quiet=True)
    assert not list((tmp_path / "runs").glob("toy-sweep-*"))  # nothing started


def test_tune_qa_config_is_train_qa_grpo_plus_its_sweep(tmp_path):
    """`base:` merges a config over another, key by key; a cycle or a missing base is named."""
    from experiments.config import TrainConfig, load_config

    tune_qa = load_config("experiments/configs/tune_qa.yaml", TrainConfig)
    train_qa = load_config("experiments/configs/train_qa_grpo.yaml", TrainConfig)
    assert tune_qa.algorithm == train_qa.algorithm and tune_qa.env == train_qa.env
    assert (tune_qa.data.tasks_per_n, tune_qa.data.n_values) == (16, train_qa.data.n_values)  # one key over, one kept
    assert set(tune_qa.sweep.space) == {"algorithm.lr", "algorithm.kl_coef", "algorithm.kl_estimator", "memory.budget", "data.n_values"}
    (tmp_path / "a.yaml").write_text("base: b.yaml\nname: a\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="includes itself"):
        load_config(tmp_path / "a.yaml", TrainConfig)
    (tmp_path / "c.yaml").write_text("base: missing.yaml\n")
    with pytest.raises(ConfigError, match=r"missing.yaml \(the base of .*c.yaml\)"):
        load_config(tmp_path / "c.yaml", TrainConfig)


def _terminated_trials(sweep_dir) -> set[str]:
    """Trial ids that Tune's saved experiment state (what a restore reads) records as finished."""
    done = set()
    for state_file in (sweep_dir / "tune").glob("experiment_state-*.json"):
        try:
            state = json.loads(state_file.read_text())
        except (OSError, ValueError):  # being written
            continue
        for trial_json, _ in state.get("trial_data", []):
            trial = json.loads(trial_json)
            if trial.get("status") == "TERMINATED":
                done.add(trial["trial_id"])
    return done


def _mark_running(sweep_dir, trial_id: str) -> None:
    """Rewrite Tune's newest saved experiment state so that `trial_id` reads as still running."""
    state_file = max((sweep_dir / "tune").glob("experiment_state-*.json"), key=lambda f: f.stat().st_mtime)
    state = json.loads(state_file.read_text())
    for pair in state["trial_data"]:
        trial = json.loads(pair[0])
        if trial["trial_id"] == trial_id:
            trial["status"] = "RUNNING"
            pair[0] = json.dumps(trial)
    state_file.write_text(json.dumps(state))


def test_a_killed_sweep_resumes_without_rerunning_finished_trials(char_model_dir, tmp_path):
    """SIGKILL the driver once Tune has recorded a finished trial; `--resume` finishes the
    sweep, and the finished trial's training run is not made again."""
    path = write_config(tmp_path, char_model_dir, num_samples=3)
    cmd = [sys.executable, "-m", "experiments.cli", "tune", str(path)]
    # without the store an earlier test pointed MLFLOW_TRACKING_URI at (mlflow.set_tracking_uri writes it)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=env)
    deadline = time.monotonic() + 300
    finished: set[str] = set()
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            sweeps = list((tmp_path / "runs").glob("toy-sweep-*"))
            finished = _terminated_trials(sweeps[0]) if sweeps else set()
            if finished:
                break
            time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray processes it started
        proc.wait()
    assert finished, "no trial finished within 300 s"
    (sweep_dir,) = (tmp_path / "runs").glob("toy-sweep-*")
    runs_before = {p.name for p in (sweep_dir / "trials").glob("toy-*")}

    parent_before = json.loads((sweep_dir / "sweep_state.json").read_text())["mlflow_run_id"]
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{(tmp_path / 'runs').resolve() / 'mlflow.db'}")
    experiment_id = client.get_run(parent_before).info.experiment_id
    # trials whose training ended, as Tune may not have recorded yet when the driver died
    trained = {r.data.tags["mlflow.runName"][len("trial-"):] for r in client.search_runs(
        [experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_before}' and attributes.status = 'FINISHED'")}
    assert finished <= trained
    # and one that Tune did record is made to look unrecorded (the state a kill just after a
    # trial's end leaves), so the replay of a trained trial is exercised every time
    _mark_running(sweep_dir, sorted(finished)[0])
    with pytest.raises(ConfigError, match=r"--resume: the config differs .* at algorithm.group_size"):
        sweep(path, ["algorithm.group_size=2"], resume=True, quiet=True)  # refused before anything runs

    result = sweep(path, resume=True, quiet=True)

    assert result.mlflow_run_id == parent_before  # the same parent run continues
    children = client.search_runs([experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_before}'")
    statuses = sorted(c.info.status for c in children)
    assert "RUNNING" not in statuses and statuses.count("FINISHED") == 3  # the killed trials' runs end as KILLED
    assert {t["mlflow_run_id"] for t in result.trials} <= {c.info.run_id for c in children if c.info.status == "FINISHED"}
    assert result.sweep_dir == sweep_dir and len(result.trials) == 3
    assert all(t["status"] == "TERMINATED" and t["iterations"] == 2 for t in result.trials)
    runs_after = {p.name for p in (sweep_dir / "trials").glob("toy-*")}
    for trial_id in trained:  # one training run per trial that had trained: it was not run again
        assert len([r for r in runs_after if f"-{trial_id}-" in r]) == 1
    assert runs_before <= runs_after


@pytest.fixture
def two_node_cluster(tmp_path, monkeypatch):
    """A real two-node Ray cluster on this machine: `ray start --head`, then a second node
    joining it with `ray start --address`, one CPU each (so two 1-CPU trials land apart).
    Token authentication, as a cluster should run (Ray 2.60 enables it for local clusters),
    with the machine's default token (~/.ray/auth_token, made if missing): this process may
    have loaded it already for an earlier local cluster, and Ray keeps a token once loaded."""
    monkeypatch.setenv("RAY_AUTH_MODE", "token")  # for the nodes and the driver's ray.init
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    ray_bin = str(Path(sys.executable).with_name("ray"))
    subprocess.run([ray_bin, "get-auth-token", "--generate"], check=True, capture_output=True, timeout=60)
    address = f"127.0.0.1:{_free_port()}"
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--num-gpus=0", "--disable-usage-stats"]
    try:
        subprocess.run([ray_bin, "start", "--head", f"--port={address.split(':')[1]}", "--include-dashboard=false", *common],
                       check=True, capture_output=True, timeout=120)
        subprocess.run([ray_bin, "start", f"--address={address}", *common], check=True, capture_output=True, timeout=120)
        yield address
    finally:
        subprocess.run([ray_bin, "stop", "--force"], capture_output=True, timeout=120)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_sweep_on_a_two_node_cluster_places_trials_on_both_nodes(char_model_dir, tmp_path, two_node_cluster):
    import ray

    path = write_config(tmp_path, char_model_dir, num_samples=2, max_concurrent=2, cpus_per_trial=1)
    result = sweep(path, address=two_node_cluster, quiet=True)

    assert len(result.trials) == 2 and all(t["status"] == "TERMINATED" for t in result.trials)
    ray.init(address=two_node_cluster, log_to_driver=False, configure_logging=False)
    try:
        nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    finally:
        ray.shutdown()
    assert len(nodes) == 2 and {t["node_id"] for t in result.trials} == nodes


def test_a_sweep_whose_trials_all_fail_is_an_error_naming_the_cause(tmp_path):
    """A trial that raises is recorded as ERROR with its message; a sweep with no finished
    trial is an error (the CLI exits 2), and sweep.json still holds what happened."""
    from tune.sweep import SweepError

    missing = tmp_path / "no-such-model"
    path = write_config(tmp_path, str(missing), num_samples=1)
    with pytest.raises(SweepError, match=r"no trial finished \(1 errored; first: .*no-such-model"):
        sweep(path, quiet=True)
    (sweep_dir,) = (tmp_path / "runs").glob("toy-sweep-*")
    (trial,) = json.loads((sweep_dir / "sweep.json").read_text())["trials"]
    assert trial["status"] == "ERROR" and "no-such-model" in trial["error"] and trial["iterations"] is None
