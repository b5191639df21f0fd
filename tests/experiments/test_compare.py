"""`mem1 compare` with real parts: a real MLflow SQLite store in a temporary folder, filled
through the project's own tracking helpers (tracking.setup / run / log_metrics) with runs
shaped like the commands' (two evaluations with a child per row label, metrics at step = N;
a training run with metrics per iteration; a sweep parent with best/* metrics, best.* tags and
two trial children), in two experiments. The tests parse the page back with the stdlib's
html.parser and check it against what was logged, decode its plots, and find it in MLflow.
"""

import base64
import io
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from mlflow import MlflowClient
from PIL import Image

from experiments import cli, compare, tracking

EXP_A, EXP_B = "cmp-a", "cmp-b"
RUN_A = 'eval <b>"x"</b> & co'  # user text the page must escape
RUN_B = "eval-b"
# (experiment, eval run, model label, memory policy) -> N -> metrics, as the children log them;
# values that print long (0.1 + 0.2) check that the table carries the exact number
EVALS = {
    (EXP_A, RUN_A, "base", "mem1"): {
        1: {"eval/em": 0.5, "eval/f1": 0.1 + 0.2, "rollout/valid_action_rate": 1.0, "memory/peak_tokens": 100.0, "memory/peak_context_tokens": 90.0},
        2: {"eval/em": 0.25, "eval/f1": 0.4, "rollout/valid_action_rate": 0.75, "memory/peak_tokens": 110.0, "memory/peak_context_tokens": 95.0},
    },
    (EXP_A, RUN_A, "base", "full_context"): {  # logs no F1: its cells read "–"
        1: {"eval/em": 0.5, "rollout/valid_action_rate": 1.0, "memory/peak_tokens": 300.0, "memory/peak_context_tokens": 280.0},
        2: {"eval/em": 0.5, "rollout/valid_action_rate": 1.0, "memory/peak_tokens": 600.0, "memory/peak_context_tokens": 570.0},
    },
    (EXP_B, RUN_B, "sft", "mem1"): {
        1: {"eval/em": 0.75, "eval/f1": 0.8, "rollout/valid_action_rate": 1.0, "memory/peak_tokens": 120.0, "memory/peak_context_tokens": 100.0},
        2: {"eval/em": 0.125, "eval/f1": 0.2, "rollout/valid_action_rate": 0.5, "memory/peak_tokens": 130.0, "memory/peak_context_tokens": 111.0},
    },
}
EVAL_PERF = {RUN_A: {"perf/wall_s": 12.5, "perf/tokens_per_s": 345.6}, RUN_B: {}}  # the parent's; RUN_B logged none
# N = 1: full_context is beaten by mem1 (same EM, fewer tokens); N = 2: sft's mem1 by base mem1
PARETO = {(EXP_A, RUN_A, "base", "mem1", "1"), (EXP_B, RUN_B, "sft", "mem1", "1"),
          (EXP_A, RUN_A, "base", "mem1", "2"), (EXP_A, RUN_A, "base", "full_context", "2")}
TRAIN = {"rollout/reward": [0.1, 0.3, 0.2], "rollout/em": [0.0, 0.5, 0.5]}  # per iteration 1, 2, 3
SWEEP_BEST = {"rollout/em": 0.625, "memory/peak_tokens": 140.0, "rollout/reward": 0.4, "loss/policy": -0.01}
TRIALS = {"trial-a": "1e-05", "trial-b": "3e-05"}  # trial -> its algorithm.lr param; trial-b is the best


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    ids = {name: tracking.setup(uri, root, name) for name in (EXP_A, EXP_B)}
    for run in (RUN_A, RUN_B):
        exp = EXP_A if run == RUN_A else EXP_B
        with tracking.run(ids[exp], run, tags={"kind": "eval"}) as parent:
            tracking.log_metrics(EVAL_PERF[run])
            for (e, r, model, policy), per_n in EVALS.items():
                if r != run:
                    continue
                label = policy if model == "base" else f"{policy}@{model}"
                with tracking.run(ids[exp], f"{run}/{label}", params={"memory_policy": policy, "model.label": model},
                                  tags={"kind": "eval", "memory_policy": policy, "model": model}, parent_run_id=parent.info.run_id):
                    for n, metrics in per_n.items():
                        tracking.log_metrics(metrics, step=n)
    with tracking.run(ids[EXP_A], "train_qa_grpo-1", tags={"kind": "train", "memory_policy": "mem1"}) as train:
        for it in range(3):
            tracking.log_metrics({m: v[it] for m, v in TRAIN.items()}, step=it + 1)
    with tracking.run(ids[EXP_B], "tune_qa-sweep", params={"sweep.metric": "rollout/em,memory/peak_tokens", "sweep.mode": "max,min"},
                      tags={"kind": "sweep"}) as sweep:
        trial_runs = {}
        for name, lr in TRIALS.items():
            with tracking.run(ids[EXP_B], name, params={"algorithm.lr": lr}, tags={"kind": "train"}, parent_run_id=sweep.info.run_id) as trial:
                tracking.log_metrics({"rollout/reward": 0.2, "rollout/em": 0.5}, step=1)
                trial_runs[name] = trial.info.run_id
        tracking.log_metrics({f"best/{k}": v for k, v in SWEEP_BEST.items()})
        import mlflow

        # as tune/sweep.py tags its parent: the values as JSON, the best trial's run id
        mlflow.set_tags({"best.algorithm.lr": json.dumps(float(TRIALS["trial-b"])), "best.memory.budget": "null",
                         "best.trial_id": "b", "best.run_id": trial_runs["trial-b"]})
    done = compare.compare(uri, None, root / "compare.html")
    return {"uri": uri, "root": root, "report": done, "html": done.path.read_text(encoding="utf-8"), "train_id": train.info.run_id}


class Tables(HTMLParser):
    """The page's tables as {table id: [row: {key or metric: text or exact value}]}."""

    def __init__(self):
        super().__init__()
        self.tables: dict[str, list[dict]] = {}
        self.table = self.cell = None
        self.text = ""

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self.table = self.tables.setdefault(a.get("id"), [])
        elif tag == "tr" and self.table is not None and "data-run-id" in a:
            self.table.append({"run_id": a["data-run-id"]})
        elif tag in ("td", "span") and self.table is not None and ("data-key" in a or "data-metric" in a):
            self.cell, self.text = a, ""

    def handle_data(self, data):
        if self.cell is not None:
            self.text += data

    def handle_endtag(self, tag):
        if tag in ("td", "span") and self.cell is not None:
            a, row = self.cell, self.table[-1]
            if "data-metric" in a:
                row[a["data-metric"]] = float(a["data-value"]) if "data-value" in a else self.text
            elif a["data-key"] == "pareto":
                row["pareto"] = a["data-value"] == "1"
            elif a["data-key"] != "best_metrics":  # its spans are read one by one
                row[a["data-key"]] = self.text
            self.cell = None
        elif tag == "table":
            self.table = None


def tables(page: str) -> dict[str, list[dict]]:
    parser = Tables()
    parser.feed(page)
    return parser.tables


def test_table_is_what_mlflow_holds(store):
    rows = tables(store["html"])["policies"]
    client = MlflowClient(tracking_uri=store["uri"])
    got = {(r["experiment"], r["run"], r["model"], r["policy"], int(r["n"])): r for r in rows}
    expected = {(*k, n): m for k, per_n in EVALS.items() for n, m in per_n.items()}
    assert set(got) == set(expected)
    for key, metrics in expected.items():
        row = got[key]
        for metric in compare.COLUMNS:
            want = metrics.get(metric, EVAL_PERF[key[1]].get(metric))
            assert row[metric] == (compare.MISSING if want is None else want), (key, metric)
            if metric in metrics:  # and it is MLflow's value at step N of that child run
                assert row[metric] == next(m.value for m in client.get_metric_history(row["run_id"], metric) if m.step == key[4])
    assert {k[:4] + (str(k[4]),) for k, r in got.items() if r["pareto"]} == PARETO


def test_escapes_user_text(store):
    page = store["html"]
    assert RUN_A not in page and "<b>" not in page
    assert "eval &lt;b&gt;&quot;x&quot;&lt;/b&gt; &amp; co" in page


def test_plots_are_embedded_pngs(store):
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', store["html"])
    assert len(images) == 4  # EM vs N, peak tokens vs N, Pareto view, learning curves
    for data in images:
        img = Image.open(io.BytesIO(base64.b64decode(data)))
        assert img.format == "PNG" and img.width > 300 and img.height > 200
        img.verify()
    assert "src=\"http" not in store["html"] and "<script" not in store["html"] and "<link" not in store["html"]


def test_learning_curves_are_the_train_runs_history(store):
    curves = {c.run: c for c in store["report"].comparison.curves}
    assert set(curves) == {"train_qa_grpo-1", "tune_qa-sweep/trial-a", "tune_qa-sweep/trial-b"}
    assert curves["train_qa_grpo-1"].points == {m: [(i + 1, v) for i, v in enumerate(vals)] for m, vals in TRAIN.items()}


def test_sweep_best_trial(store):
    (row,) = tables(store["html"])["sweeps"]
    assert row["sweep"] == "tune_qa-sweep" and row["trials"] == "2" and row["best_trial"] == "trial-b"
    assert row["best_values"].startswith("algorithm.lr = 3e-05")
    assert store["report"].comparison.sweeps[0].best_values == {"algorithm.lr": "3e-05", "memory.budget": "null"}
    assert row["objective"] == "rollout/em (max), memory/peak_tokens (min)"
    shown = {m: v for m, v in row.items() if "/" in m}
    assert shown == {m: SWEEP_BEST[m] for m in ("rollout/em", "memory/peak_tokens", "rollout/reward")}  # objective first, no loss/*


def test_report_is_logged_to_mlflow(store, tmp_path):
    client = MlflowClient(tracking_uri=store["uri"])
    run = client.get_run(store["report"].mlflow_run_id)
    assert run.data.tags["kind"] == "compare" and run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == EXP_A  # the first experiment
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["compare.html"]
    copy = client.download_artifacts(run.info.run_id, "compare.html", str(tmp_path))
    assert Path(copy).read_text(encoding="utf-8") == store["html"]


def test_named_experiments_and_own_runs(store, tmp_path):
    only_b = compare.compare(store["uri"], [EXP_B], tmp_path / "b.html")
    assert {r.experiment for r in only_b.comparison.rows} == {EXP_B} and len(only_b.comparison.sweeps) == 1
    client = MlflowClient(tracking_uri=store["uri"])
    assert client.get_experiment(client.get_run(only_b.mlflow_run_id).info.experiment_id).name == EXP_B
    # the main job's way: only its runs (and their children); the compare runs are never rows
    parent_a = client.search_runs([client.get_experiment_by_name(EXP_A).experiment_id],
                                  f"tags.kind = 'eval' and attributes.run_name = '{RUN_A}'")[0].info.run_id
    own = compare.collect(store["uri"], [EXP_A, EXP_B], run_ids=[parent_a, store["train_id"]])
    assert {(r.run, r.policy) for r in own.rows} == {(RUN_A, "mem1"), (RUN_A, "full_context")}
    assert [c.run for c in own.curves] == ["train_qa_grpo-1"] and not own.sweeps


def test_missing_store_or_experiment_is_an_error(store, tmp_path):
    with pytest.raises(compare.CompareError, match="no MLflow store"):
        compare.collect(f"sqlite:///{tmp_path / 'nothing.db'}")
    assert not (tmp_path / "nothing.db").exists()
    with pytest.raises(compare.CompareError, match=f"no experiment 'nope'.*{EXP_A}"):
        compare.collect(store["uri"], ["nope"])


def test_cli(store, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(tracking, "_ENV_TRACKING_URI", None)  # the default store, whatever MLFLOW_TRACKING_URI the shell has
    out = tmp_path / "cli.html"
    assert cli.main(["compare", EXP_A, "--tracking-uri", store["uri"], "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"report: {out.resolve().as_uri()}" in printed and "kind=compare" in printed
    assert len(tables(out.read_text(encoding="utf-8"))["policies"]) == 4
    assert cli.main(["compare", "nope", "--tracking-uri", store["uri"], "-o", str(out)]) == 2
    assert cli.main(["compare", "--output-dir", str(tmp_path / "empty")]) == 2  # no runs/mlflow.db there


@pytest.mark.browser
@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not on PATH")
def test_page_renders_in_a_browser(store, tmp_path):
    shot = tmp_path / "page.png"
    subprocess.run(["chromium", "--headless=new", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}", "--window-size=1280,4000",
                    store["report"].path.resolve().as_uri()], check=True, capture_output=True, timeout=120)
    img = Image.open(shot).convert("RGB")
    assert img.size == (1280, 4000)
    assert len(img.getcolors(maxcolors=1 << 20)) > 200  # not blank: text, table and plots
    # the plots' lines and markers are the only saturated colours on the page (text is grey,
    # the Pareto shading pale): many of them means the embedded PNGs were drawn
    saturated = sum(1 for r, g, b in img.getdata() if max(r, g, b) - min(r, g, b) > 100)
    assert saturated > 2000, saturated
