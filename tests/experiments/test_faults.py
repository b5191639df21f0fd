"""Faults a training run must survive with nothing lost: the driver killed outright (SIGKILL)
between checkpoints and during a checkpoint save, then `--resume`; an env runner that dies
or hangs mid-sample (real processes killed and stopped on a local Ray cluster)."""

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import mlflow
import pytest

from experiments.config import ConfigError
from experiments.faults import SampleTimeoutError
from experiments.train import train
from tests.experiments.test_training import toy_config

pytestmark = pytest.mark.slow  # each test runs a training driver in a subprocess


def _start_training(config, tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    path = tmp_path / "toy.yaml"
    path.write_text(json.dumps(config.model_dump(mode="json")))  # JSON is YAML
    # without the store an earlier test pointed MLFLOW_TRACKING_URI at (mlflow.set_tracking_uri writes it)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.Popen([sys.executable, "-m", "experiments.cli", "train", str(path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=env)
    return proc, path


def _kill_when(proc: subprocess.Popen, ready, timeout: float, poll: float) -> bool:
    """SIGKILL the driver and the Ray processes it started once `ready()`; whether it was."""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if ready():
                return True
            time.sleep(poll)
        return False
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _iterations(run_dir: Path) -> list[int]:
    return [json.loads(line)["iteration"] for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def _optimizer_steps(checkpoint: Path) -> int:
    """AdamW's step count in an RLlib learner checkpoint: it continues only if the optimizer
    state was restored."""
    import pickle

    (state_file,) = (checkpoint / "learner_group" / "learner").glob("state.pkl")
    state = pickle.loads(state_file.read_bytes())
    (opt,) = state["optimizer"].values()  # {"module_id": ..., "state": torch's optimizer state_dict}
    return int(max(float(s["step"]) for s in opt["state"]["state"].values()))


def kill_and_resume(model_dir: str, tmp_path: Path) -> dict:
    """Train 6 iterations (checkpoints every 2) in a subprocess, SIGKILL it after iteration
    3, then resume in this process; what was on disk and in MLflow before and after
    (also the reliability benchmark's `train_kill_resume` section)."""
    config = toy_config(model_dir, tmp_path, **{"training.iterations": 6, "training.checkpoint_every": 2})
    proc, _ = _start_training(config, tmp_path)
    run_dirs = lambda: list((tmp_path / "runs").glob("toy-*"))
    reached = _kill_when(proc, lambda: bool(run_dirs()) and (run_dirs()[0] / "metrics.jsonl").exists()
                         and len(_iterations(run_dirs()[0])) >= 3, timeout=240, poll=0.05)
    assert reached, "the run did not reach iteration 3 within 240 s"
    (run_dir,) = run_dirs()
    state = json.loads((run_dir / "run.json").read_text())
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{(tmp_path / 'runs').resolve() / 'mlflow.db'}")
    steps = lambda run_id, key: sorted(m.step for m in client.get_metric_history(run_id, key))
    out = {"checkpoints_at_kill": [Path(c).name for c in state["checkpoints"]], "iterations_at_kill": _iterations(run_dir),
           "mlflow_steps_at_kill": steps(state["mlflow_run_id"], "rollout/reward")}
    try:
        train(toy_config(model_dir, tmp_path, **{"training.iterations": 6, "training.checkpoint_every": 2, "algorithm.lr": 1e-3}),
              resume=True, quiet=True)
        out["changed_config_refused"] = None
    except ConfigError as e:
        out["changed_config_refused"] = str(e)
    resumed = train(config, resume=True, quiet=True)
    out.update({
        "same_run": resumed.run_dir == run_dir and resumed.mlflow_run_id == state["mlflow_run_id"],
        "resumed_iterations": [h["iteration"] for h in resumed.history],
        "metrics_file_iterations": _iterations(run_dir),
        "mlflow_steps": {key: steps(resumed.mlflow_run_id, key) for key in ("rollout/reward", "perf/iteration_s", "loss/policy")},
        "optimizer_steps": _optimizer_steps(run_dir / "checkpoints" / "iter_0006"),
        "mlflow_status": client.get_run(resumed.mlflow_run_id).info.status,
    })
    return out


def test_a_killed_run_resumes_with_each_iteration_logged_once(char_model_dir, tmp_path):
    """Killed after iteration 3 with the last checkpoint at 2: the resumed run re-runs 3 and
    goes on to 6 in the same run folder and MLflow run; metrics.jsonl and MLflow hold each
    iteration once; the optimizer's step count continues; a changed config is refused."""
    r = kill_and_resume(char_model_dir, tmp_path)

    assert r["checkpoints_at_kill"] == ["iter_0002"] and r["mlflow_steps_at_kill"] == [1, 2]  # 3 is lost with the kill
    assert re.search(r"--resume: the config differs .* at algorithm\.lr", r["changed_config_refused"] or "")
    assert r["same_run"] and r["resumed_iterations"] == [3, 4, 5, 6]
    assert r["metrics_file_iterations"] == [1, 2, 3, 4, 5, 6]
    assert all(steps == [1, 2, 3, 4, 5, 6] for steps in r["mlflow_steps"].values()), r["mlflow_steps"]
    # one update per GRPO iteration (a single on-policy pass): 6 updates, not 4 from a fresh optimizer
    assert r["optimizer_steps"] == 6
    assert r["mlflow_status"] == "FINISHED"


def test_a_kill_during_a_checkpoint_save_leaves_the_last_checkpoint_intact(char_model_dir, tmp_path):
    """SIGKILL while a checkpoint is being written (its .partial folder exists): run.json
    names only complete checkpoints, and `--resume` restores the newest of them."""
    config = toy_config(char_model_dir, tmp_path, **{"training.iterations": 4, "training.checkpoint_every": 1})
    proc, _ = _start_training(config, tmp_path)
    checkpoints = tmp_path / "runs"
    saving = lambda: any(p.name.endswith(".partial") and p.name != "iter_0001.partial" for p in checkpoints.glob("toy-*/checkpoints/*"))
    assert _kill_when(proc, saving, timeout=240, poll=0.002), "no second checkpoint save started within 240 s"
    (run_dir,) = checkpoints.glob("toy-*")
    partial = [p.name for p in (run_dir / "checkpoints").glob("*.partial")]
    state = json.loads((run_dir / "run.json").read_text())
    assert partial, "the kill came after the save finished"  # the case under test: killed mid-save
    assert all(Path(c).exists() and not c.endswith(".partial") for c in state["checkpoints"])
    last = int(Path(state["checkpoints"][-1]).name.removeprefix("iter_"))

    resumed = train(config, resume=True, quiet=True)

    assert [h["iteration"] for h in resumed.history] == list(range(last + 1, 5))
    assert _iterations(run_dir) == [1, 2, 3, 4]
    assert not list((run_dir / "checkpoints").glob("*.partial"))


def _runner_pids() -> list[int]:
    """This test process's env runner actors (Ray titles their processes ray::Mem1EnvRunner;
    the ancestry keeps out other Ray clusters on the machine)."""
    import psutil

    mine = []
    for p in psutil.Process().children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE and "ray::Mem1EnvRunner" in " ".join(p.cmdline()):
                mine.append(p.pid)
        except psutil.NoSuchProcess:
            pass
    return sorted(mine)


def _wait_until_runners_alive(timeout: float, replaced: list[int]) -> None:
    """Until Ray has replaced the processes `replaced` and finished restarting every env
    runner actor: RLlib's health probe, at the start of the next iteration, fails at once on
    an actor that is still restarting (and a killed actor shows ALIVE for a few seconds)."""
    from ray._private import state  # the GCS actor table (the public state API needs the dashboard)

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runners = [a for a in state.actors().values() if a["ActorClassName"] == "Mem1EnvRunner" and a["State"] != "DEAD"]
        if runners and all(a["State"] == "ALIVE" and a["Pid"] not in replaced for a in runners):
            return
        time.sleep(0.5)
    raise AssertionError(f"env runners not back within {timeout} s")


def dead_and_hung_runner(model_dir: str, tmp_path: Path) -> tuple[dict[int, dict], list[int]]:
    """5 iterations with two env runners on the running Ray cluster: after iteration 1 one
    runner is stopped (SIGSTOP) and killed a second later, while it holds iteration 2's
    sample call; after iteration 2 one is stopped for good (it hangs in iteration 3, with
    training.sample_timeout_s=10). Each iteration's metrics, and the frozen processes
    (also the reliability benchmark's `env_runner_faults` section)."""
    frozen: list[int] = []

    def hook(iteration: int, metrics: dict) -> None:
        if iteration in (2, 3):  # Ray restarts a lost runner in a new process (tens of seconds of imports)
            _wait_until_runners_alive(timeout=180, replaced=frozen)
        if iteration in (1, 2):
            pid = _runner_pids()[0]
            os.kill(pid, signal.SIGSTOP)  # it holds the next iteration's call and never answers
            frozen.append(pid)
            if iteration == 1:
                threading.Timer(1.0, os.kill, (pid, signal.SIGKILL)).start()  # dies with the call in flight

    config = toy_config(model_dir, tmp_path, **{"training.iterations": 5, "training.num_env_runners": 2,
                                                "training.sample_timeout_s": 10.0})
    result = train(config, quiet=True, on_iteration=hook)
    return {m["iteration"]: m for m in result.history}, frozen


@pytest.mark.usefixtures("ray_cluster")
def test_a_dead_and_a_hung_env_runner_are_replaced_and_the_run_goes_on(char_model_dir, tmp_path):
    """Each faulty iteration trains on the other runner's episodes and says what it lost;
    the hung runner is given up after training.sample_timeout_s and killed; RLlib restarts
    both with the learner's weights, so iterations 4 and 5 have every episode, none twice,
    sampled with the current policy."""
    h, frozen = dead_and_hung_runner(char_model_dir, tmp_path)

    full = h[1]["rollout/episodes"]  # 4 tasks x group 8, split over the two runners
    assert (h[2]["rollout/env_runners_died"], h[2]["rollout/env_runners_timed_out"], h[2]["rollout/episodes"]) == (1, 0, full / 2)
    assert (h[3]["rollout/env_runners_died"], h[3]["rollout/env_runners_timed_out"], h[3]["rollout/episodes"]) == (0, 1, full / 2)
    assert 10.0 <= h[3]["perf/sample_s"] < 30.0  # the wait ended at the timeout
    assert [h[i]["rollout/episodes"] for i in (4, 5)] == [full, full]  # both back, nothing counted twice
    assert all(h[i]["rollout/env_runners_died"] == h[i]["rollout/env_runners_timed_out"] == 0 for i in (1, 4, 5))
    # the restarted runners got the current weights: their sampling log-probs match the learner's
    assert all(h[i]["rollout/logp_mismatch_max"] < 1e-3 for i in (4, 5)), [h[i]["rollout/logp_mismatch_max"] for i in (4, 5)]
    assert not set(frozen) & set(_runner_pids())


@pytest.mark.usefixtures("ray_cluster")
def test_a_hung_env_runner_stops_the_run_when_configured_to(char_model_dir, tmp_path):
    frozen: list[int] = []

    def hook(iteration: int, metrics: dict) -> None:
        if iteration == 1:
            frozen.append(_runner_pids()[0])
            os.kill(frozen[0], signal.SIGSTOP)

    config = toy_config(char_model_dir, tmp_path, **{"training.iterations": 3, "training.num_env_runners": 2,
                                                     "training.sample_timeout_s": 5.0, "training.on_sample_timeout": "stop"})
    try:
        with pytest.raises(SampleTimeoutError, match=r"env runner\(s\) \[\d\] did not return their episodes within training.sample_timeout_s=5.0"):
            train(config, quiet=True, on_iteration=hook)
    finally:
        for pid in frozen:  # in case the run did not kill it: a stopped process would outlive the test
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    (run_dir,) = (tmp_path / "runs").glob("toy-*")
    assert [Path(c).name for c in json.loads((run_dir / "run.json").read_text())["checkpoints"]] == ["iter_0001"]


@pytest.mark.usefixtures("ray_cluster")
def test_a_killed_runner_of_a_shared_engine_comes_back_with_every_agents_adapter(tiny_model_dir, tmp_path):
    """Two agents (mem1, and summary with its memory calls) as LoRA adapters of one vLLM
    engine per runner, two runners, GRPO. One runner dies holding iteration 2's call; that
    iteration trains on the other's episodes. Ray restarts it, and before it samples again
    Mem1Algorithm.restore_env_runners loads both agents' current adapters into its new engine
    (RLlib's own restore would edit a MultiRLModule these runners do not have, and an engine
    without adapters cannot sample): iteration 3 has every episode, sampled with log-probs
    equal to the learner's."""
    from tests.experiments.test_multi_agent import shared_engine_config

    killed: list[int] = []

    def hook(iteration: int, metrics: dict) -> None:
        if iteration == 1:
            pid = _runner_pids()[0]
            os.kill(pid, signal.SIGSTOP)  # it holds iteration 2's call, then dies with it in flight
            killed.append(pid)
            threading.Timer(1.0, os.kill, (pid, signal.SIGKILL)).start()
        if iteration == 2:
            _wait_until_runners_alive(timeout=240, replaced=killed)

    config = shared_engine_config(
        tiny_model_dir, tmp_path, data={"world_size": "small", "n_values": [1], "tasks_per_n": 4}, env={"max_turns": 2, "few_shot": False},
        agents={"mem1": {"memory": "mem1"}, "summary": {"memory": "summary"}},
        algorithm={"name": "grpo", "lr": 3e-2, "group_size": 2, "tasks_per_iteration": 2, "kl_coef": 0.0, "entropy_coef": 0.01},
        training={"iterations": 3, "num_env_runners": 2},
    )
    h = {m["iteration"]: m for m in train(config, quiet=True, on_iteration=hook).history}
    full = h[1]["rollout/episodes"]  # 2 tasks x G = 2 x 2 agents, one task per runner
    assert (h[2]["rollout/env_runners_died"], h[2]["rollout/episodes"]) == (1, full / 2)
    assert (h[3]["rollout/env_runners_died"], h[3]["rollout/episodes"]) == (0, full)
    for agent in ("mem1", "summary"):
        assert h[3][f"agents/{agent}/rollout/episodes"] == full / 2
        assert h[3][f"agents/{agent}/rollout/logp_mismatch_max"] < 1e-3, agent
