"""`mem1 eval` end to end with real parts: experiments/configs/eval_qa.yaml with overrides
for a fast run (the tiny random-init model behind the transformers sampler, the small
generated world, a real BM25 retriever server on 127.0.0.1 started and stopped by the job,
MLflow on SQLite in a temporary folder).

One evaluation (mem1 and full_context, N = 1 and 2, two tasks each) runs once per module
through the Python entry (`load_config` + `evaluate`) and the tests read what it left in
MLflow and on disk; a second, minimal one runs through the command line (`cli.main`). A
random model never follows the tag protocol, so every episode runs to its turn budget
with a corrective observation each turn, which is what makes the context checks exact.

Bad configs are answered by the command line with exit code 2 and a message naming the
field, before anything runs.
"""

import contextlib
import csv
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import pytest
import requests
from mlflow import MlflowClient
from mlflow.entities import Run
from PIL import Image

from experiments import cli
from experiments.config import EvalConfig, flat_params, load_config
from experiments.evaluate import EvalResult, evaluate
from policies.records import Episode

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "experiments" / "configs" / "eval_qa.yaml"
POLICIES = ("mem1", "full_context")
N_VALUES = (1, 2)
TASKS_PER_N = 2
TURN_BUDGET = {1: 2, 2: 3}  # base_turns 1 + turns_per_objective 1 x N
ARTIFACTS = ("episodes.jsonl", "summary.csv", "summary.json", "config.yaml", "accuracy_vs_n.png", "peak_tokens_vs_n.png")
PER_N_METRICS = ("eval/em", "eval/f1", "eval/em_sum", "memory/peak_tokens", "memory/mean_tokens", "memory/peak_context_tokens",
                 "rollout/turns", "rollout/valid_action_rate")


def overrides(model_dir: str, out: Path, experiment: str, **extra: str) -> list[str]:
    """Dotted overrides of eval_qa.yaml for a run of seconds; `extra` replaces any of them."""
    values = {
        "model.name": model_dir,
        "sampler.backend": "transformers",
        "sampler.max_new_tokens": "8",
        "policies": f"[{', '.join(POLICIES)}]",
        "data.n_values": f"[{', '.join(map(str, N_VALUES))}]",
        "data.tasks_per_n": str(TASKS_PER_N),
        "data.world_size": "small",
        "retriever.mode": "http",
        "env.base_turns": "1",
        "env.turns_per_objective": "1",
        "output_dir": str(out),
        "tracking.tracking_uri": f"sqlite:///{out / 'mlflow.db'}",
        "tracking.experiment": experiment,
        **extra,
    }
    return [f"{k}={v}" for k, v in values.items()]


@contextlib.contextmanager
def logged(name: str):
    """The INFO records of logger `name` emitted inside the block."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = records.append
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@dataclass
class Evaluated:
    config: EvalConfig
    result: EvalResult
    client: MlflowClient
    parent: Run
    children: dict[str, Run]  # memory policy -> its child run
    artifacts: Path  # the parent run's artifacts, downloaded from the store
    retriever_urls: list[str]  # as the job logged them when it started its server
    home: Path  # MEM1_HOME during the run


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """The cache folder (generated world, its BM25 index) for this module's runs, so they
    neither read nor write the user's ~/.cache/mem1."""
    return tmp_path_factory.mktemp("mem1-home")


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def evaluated(tiny_model_dir, home, out) -> Evaluated:
    config = load_config(CONFIG, EvalConfig, overrides(tiny_model_dir, out, "mem1-eval-test"))
    with mock.patch.dict(os.environ, {"MEM1_HOME": str(home)}), logged("experiments.components") as records:
        result = evaluate(config, quiet=True)
    urls = [r.args[-1] for r in records if r.msg.startswith("retriever")]
    client = MlflowClient(tracking_uri=result.tracking_uri)
    parent = client.get_run(result.mlflow_run_id)
    found = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    children = {r.data.params["memory_policy"]: r for r in found}
    artifacts = Path(client.download_artifacts(parent.info.run_id, "", str(out / "downloaded")))
    return Evaluated(config, result, client, parent, children, artifacts, urls, home)


def by_group(episodes: list[Episode]) -> dict[tuple[str, int], list[Episode]]:
    groups: dict[tuple[str, int], list[Episode]] = {}
    for ep in episodes:
        groups.setdefault((ep.info["policy"], ep.info["n"]), []).append(ep)
    return groups


def mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs)


def test_parent_run_holds_the_config_and_the_outputs(evaluated):
    parent, config = evaluated.parent, evaluated.config
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["kind"] == "eval" and Path(parent.data.tags["run_dir"]) == evaluated.result.run_dir.resolve()
    expected = {k: "" if v is None else str(v) for k, v in flat_params(config).items()}
    expected["model.path"] = config.model.name
    assert parent.data.params == expected
    for key, value in {"policies": "mem1,full_context", "data.n_values": "1,2", "data.tasks_per_n": "2", "data.world_size": "small",
                       "sampler.backend": "transformers", "sampler.max_new_tokens": "8", "retriever.mode": "http", "env.kind": "qa"}.items():
        assert parent.data.params[key] == value, key
    assert parent.data.metrics["perf/wall_s"] > 0
    assert parent.data.metrics["perf/generated_tokens"] == sum(len(ep.segments[t.generated]) for ep in evaluated.result.episodes for t in ep.turns)
    listed = {a.path: a.file_size for a in evaluated.client.list_artifacts(parent.info.run_id)}
    assert set(ARTIFACTS) <= set(listed)
    for name in ARTIFACTS:
        assert listed[name] > 0, name
        assert (evaluated.artifacts / name).read_bytes() == (evaluated.result.run_dir / name).read_bytes(), name


def test_child_run_per_policy_logs_each_metric_at_step_n(evaluated):
    assert set(evaluated.children) == set(POLICIES)
    groups = by_group(evaluated.result.episodes)
    for policy, run in evaluated.children.items():
        assert run.info.status == "FINISHED" and run.data.tags["memory_policy"] == policy
        assert run.info.run_name == f"{evaluated.result.run_dir.name}/{policy}"
        for metric in PER_N_METRICS:
            history = sorted(evaluated.client.get_metric_history(run.info.run_id, metric), key=lambda m: m.step)
            assert [m.step for m in history] == list(N_VALUES), (policy, metric)
        values = {m: {h.step: h.value for h in evaluated.client.get_metric_history(run.info.run_id, m)} for m in PER_N_METRICS}
        for n in N_VALUES:
            eps = groups[(policy, n)]
            assert len(eps) == TASKS_PER_N
            # the logged numbers are the episodes' own, averaged per (policy, N)
            assert values["memory/peak_tokens"][n] == pytest.approx(mean(ep.info["peak_tokens"] for ep in eps))
            assert values["memory/peak_context_tokens"][n] == pytest.approx(mean(max(len(ep.context_ids(t.context)) for t in ep.turns) for ep in eps))
            assert values["eval/em"][n] == pytest.approx(mean(ep.info["em_mean"] for ep in eps))
            assert values["eval/f1"][n] == pytest.approx(mean(ep.info["f1_mean"] for ep in eps))
            assert values["rollout/turns"][n] == TURN_BUDGET[n]  # a random model never answers: the budget ends it
            assert values["rollout/valid_action_rate"][n] == 0.0
    # the same N=2 tasks: the full history costs more tokens per call than mem1's last turn
    peak = {p: evaluated.client.get_metric_history(r.info.run_id, "memory/peak_context_tokens") for p, r in evaluated.children.items()}
    at_2 = {p: next(m.value for m in h if m.step == 2) for p, h in peak.items()}
    assert at_2["full_context"] > at_2["mem1"]


def test_summary_csv_matches_the_logged_metrics(evaluated):
    with (evaluated.artifacts / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["policy"], int(r["n"])) for r in rows] == sorted((p, n) for p in POLICIES for n in N_VALUES)
    for row in rows:
        run = evaluated.children[row["policy"]]
        assert int(row["episodes"]) == TASKS_PER_N
        for metric in PER_N_METRICS:
            logged_value = next(m.value for m in evaluated.client.get_metric_history(run.info.run_id, metric) if m.step == int(row["n"]))
            assert float(row[metric]) == pytest.approx(logged_value), (row["policy"], row["n"], metric)
    summary = json.loads((evaluated.artifacts / "summary.json").read_text())
    assert summary["config"]["policies"] == list(POLICIES) and len(summary["rows"]) == len(rows)


@pytest.mark.parametrize("name", ["accuracy_vs_n.png", "peak_tokens_vs_n.png"])
def test_plots_are_png_images_with_content(evaluated, name):
    path = evaluated.artifacts / name
    with Image.open(path) as image:
        image.verify()  # a truncated or corrupt file raises here
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width >= 500 and image.height >= 300
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
        assert colours is None or len(colours) > 10  # lines, labels and a legend, not a blank canvas


def read_jsonl(evaluated) -> list[dict]:
    lines = (evaluated.artifacts / "episodes.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_episodes_jsonl_records_every_turn(evaluated):
    logged_episodes, records = read_jsonl(evaluated), evaluated.result.episodes
    assert len(logged_episodes) == len(POLICIES) * len(N_VALUES) * TASKS_PER_N == len(records)
    for logged_ep, ep in zip(logged_episodes, records):
        assert logged_ep["task_id"] == ep.task_id and logged_ep["prompt"] == ep.segments[0].text
        assert (logged_ep["info"]["policy"], logged_ep["info"]["n"]) == (ep.info["policy"], ep.info["n"])
        assert logged_ep["info"]["end_reason"] == "budget"
        assert len(logged_ep["turns"]) == len(ep.turns) == TURN_BUDGET[ep.info["n"]]
        for i, (turn, t) in enumerate(zip(logged_ep["turns"], ep.turns)):
            assert turn["context_ids"] == ep.context_ids(t.context) and turn["context_ids"]
            assert turn["output"] == ep.segments[t.generated].text
            assert turn["output_ids"] == list(ep.segments[t.generated].token_ids) and len(turn["logp"]) == len(turn["output_ids"])
            if i < len(ep.turns) - 1:
                assert turn["observation"] == ep.segments[t.observation].text and "invalid" in turn["observation"]
            else:
                assert turn["observation"] is None  # the episode ended: nothing came back


def test_mem1_sees_only_the_previous_turn_and_full_context_grows(evaluated):
    checked = {p: 0 for p in POLICIES}
    for logged_ep, ep in zip(read_jsonl(evaluated), evaluated.result.episodes):
        turns, policy = logged_ep["turns"], logged_ep["info"]["policy"]
        prompt = turns[0]["context_ids"]
        assert [c[0] for c in turns[0]["context"]] == [0] and prompt == list(ep.segments[0].token_ids)
        for i in range(1, len(turns)):
            prev = ep.turns[i - 1]
            last_turn = turns[i - 1]["output_ids"] + list(ep.segments[prev.observation].token_ids)
            segments = [c[0] for c in turns[i]["context"]]
            older = {s for t in ep.turns[: i - 1] for s in (t.generated, t.observation)}
            if policy == "mem1":
                assert segments == [0, prev.generated, prev.observation]
                assert not older & set(segments)
                assert turns[i]["context_ids"] == prompt + last_turn
            else:
                assert segments == [0] + sorted(older | {prev.generated, prev.observation})
                assert turns[i]["context_ids"] == turns[i - 1]["context_ids"] + last_turn
                assert len(turns[i]["context_ids"]) > len(turns[i - 1]["context_ids"])
            checked[policy] += 1
    # N=1: 1 later turn, N=2: 2 later turns, two tasks each
    assert checked == {p: TASKS_PER_N * sum(TURN_BUDGET[n] - 1 for n in N_VALUES) for p in POLICIES}


def test_the_job_started_and_stopped_a_real_retriever_server(evaluated):
    [url] = evaluated.retriever_urls
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url), url
    with pytest.raises(requests.ConnectionError):  # stopped with the job
        requests.get(f"{url}/health", timeout=2)
    corpus = evaluated.home / "data" / "world-s0-small" / "corpus.jsonl"
    assert corpus.stat().st_size > 0
    assert any(Path(f"{corpus}.index").iterdir())  # the server built its BM25 index beside the corpus


def test_cli_eval_runs_the_job_and_prints_where_it_logged(tiny_model_dir, home, out, capfd):
    out = out / "cli"  # a new MLflow store: its creation is what MLflow would announce
    small = {"policies": "[mem1]", "data.n_values": "[1]", "data.tasks_per_n": "1", "env.max_turns": "1", "sampler.max_new_tokens": "4"}
    argv = ["eval", str(CONFIG)]
    for o in overrides(tiny_model_dir, out, "mem1-eval-cli-test", **small):
        argv += ["-o", o]
    with mock.patch.dict(os.environ, {"MEM1_HOME": str(home)}):
        assert cli.main(argv) == 0
    stdout, stderr = capfd.readouterr()
    assert re.search(r"^mem1\s+1\s", stdout, re.M), stdout  # the table row
    run_id = re.search(r"MLflow:\s+run (\w+) in (\S+)", stdout)
    assert run_id and run_id[2] == f"sqlite:///{out / 'mlflow.db'}", stdout
    client = MlflowClient(tracking_uri=run_id[2])
    parent = client.get_run(run_id[1])
    assert parent.info.status == "FINISHED" and parent.data.params["policies"] == "mem1"
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{run_id[1]}'")
    assert [c.data.params["memory_policy"] for c in children] == ["mem1"]
    assert [m.step for m in client.get_metric_history(children[0].info.run_id, "memory/peak_tokens")] == [1]
    assert (out / "mlflow.db").is_file()
    assert "Traceback" not in stderr and "INFO mlflow" not in stderr  # MLflow's own chatter (store creation) is off


BAD = {
    "unknown key": (["-o", "sampler.temprature=0.5"], ["sampler.temprature: unknown key", "temperature", "max_new_tokens"]),
    "unknown section": (["-o", "sampeler.backend=vllm"], ["sampeler: unknown key", "sampler"]),
    "bad policy": (["-o", "policies=[mem1, mem2]"], ["policies", "unknown memory policy 'mem2'", "full_context", "window"]),
    "bad policy argument": (["-o", "policies=[window(k=0)]"], ["policies", "window size must be at least 1"]),
    "bad value": (["-o", "env.topk=0"], ["env.topk = 0", "greater than or equal to 1"]),
    "bad world size": (["-o", "data.world_size=tiny"], ["data.world_size = 'tiny'", "small", "default"]),
    "bad override": (["-o", "sampler.backend"], ["sampler.backend", "section.key=value"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_config_is_a_clear_error_without_traceback(case, tmp_path, capsys):
    args, expected = BAD[case]
    assert cli.main(["eval", str(CONFIG), "-o", f"output_dir={tmp_path / 'runs'}", *args]) == 2
    stdout, stderr = capsys.readouterr()
    assert stdout == "" and "Traceback" not in stderr
    for text in expected:
        assert text in stderr, (text, stderr)
    assert not (tmp_path / "runs").exists()  # refused before the job started


def test_missing_config_file_is_named(tmp_path, capsys):
    assert cli.main(["eval", str(tmp_path / "nope.yaml")]) == 2
    stdout, stderr = capsys.readouterr()
    assert stdout == "" and stderr.strip() == f"config file not found: {tmp_path / 'nope.yaml'}"
