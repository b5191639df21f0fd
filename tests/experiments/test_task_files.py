"""`data.source` set to a MEM1 multi-objective task file (the format of the reference's own
processed evaluation files, written here row by row as its scripts write them), through the
command line: `mem1 eval` plays the file's tasks as they are (each task's N from the file),
with the tiny random-init model behind the transformers sampler, a real BM25 retriever
server on 127.0.0.1 over a small corpus, and MLflow on SQLite in a temporary folder.

Every data or config problem, in `mem1 eval`, `train`, `sft` and `main`, ends the command
with exit code 2 and one line on stderr naming the file and the field, never a traceback.
"""

import csv
import json
import os
import re
from collections import Counter
from pathlib import Path
from unittest import mock

import pytest

from envs.data import load_tasks
from envs.retrieval.corpus import Document, write_corpus_jsonl
from experiments import cli
from tests.envs.data.test_loaders import _mem1_row, _write_rows
from tests.experiments.test_evaluate import CONFIG, overrides

CONFIGS = CONFIG.parent
FILE_COUNTS = {1: 3, 2: 2, 3: 1}  # tasks per N in the task file
FACTS = {
    "Who sang Dancing Queen": ("ABBA", "Dancing Queen is a 1976 song by the Swedish group ABBA."),
    "What is the capital of France": ("Paris", "Paris is the capital and largest city of France."),
    "Who wrote Hamlet": ("William Shakespeare", "Hamlet is a tragedy written by William Shakespeare."),
    "What year did World War II end": ("1945", "World War II ended in 1945."),
    "What is the tallest mountain": ("Mount Everest", "Mount Everest is Earth's highest mountain above sea level."),
    "Which planet is the largest": ("Jupiter", "Jupiter is the largest planet in the Solar System."),
}


def write_task_file(path: Path) -> Path:
    """FILE_COUNTS tasks in the reference's layout: N = 2 first, then 1, then 3."""
    questions = list(FACTS)
    rows, k = [], 0
    for n, count in [(2, 2), (1, 3), (3, 1)]:
        for _ in range(count):
            chosen = [questions[(k + i) % len(questions)] for i in range(n)]
            rows.append(_mem1_row(chosen, [[FACTS[q][0]] for q in chosen], list(range(k, k + n))))
            k += n
    return _write_rows(rows, path)


@pytest.fixture
def data(tmp_path) -> dict[str, Path]:
    corpus = write_corpus_jsonl([Document.make(str(i), q, fact) for i, (q, (_, fact)) in enumerate(FACTS.items())], tmp_path / "corpus.jsonl")
    return {"tasks": write_task_file(tmp_path / "test.parquet"), "corpus": corpus}


def argv_for(command: str, model_dir: str, out: Path, **extra: str) -> list[str]:
    argv = [command, str(CONFIG)]
    for o in overrides(model_dir, out, f"mem1-task-file-{command}", **extra):
        argv += ["-o", o]
    return argv


def test_eval_plays_the_task_files_tasks_with_their_own_n(tiny_model_dir, data, tmp_path, capfd):
    file_tasks = load_tasks(data["tasks"])
    extra = {"data.source": str(data["tasks"]), "retriever.corpus": str(data["corpus"]), "data.n_values": "[1, 2, 3]",
             "data.tasks_per_n": "8", "policies": "[mem1]", "env.max_turns": "1", "sampler.max_new_tokens": "4"}
    with mock.patch.dict(os.environ, {"MEM1_HOME": str(tmp_path / "home")}):
        assert cli.main(argv_for("eval", tiny_model_dir, tmp_path / "runs", **extra)) == 0
    stdout, stderr = capfd.readouterr()
    assert "Traceback" not in stderr
    run_dir = Path(re.search(r"^outputs: (\S+)$", stdout, re.M)[1])
    episodes = [json.loads(line) for line in (run_dir / "episodes.jsonl").read_text().splitlines()]
    assert Counter(ep["info"]["n"] for ep in episodes) == FILE_COUNTS  # every task of the file, at its own N
    by_id = {t.id: t for t in file_tasks}
    assert sorted(ep["task_id"] for ep in episodes) == sorted(by_id)
    for ep in episodes:
        task = by_id[ep["task_id"]]
        assert ep["info"]["n"] == task.num_objectives
        assert task.question_text in ep["prompt"]  # the file's questions, as the file joins them
    with (run_dir / "summary.csv").open() as f:
        rows = {int(r["n"]): int(r["episodes"]) for r in csv.DictReader(f)}
    assert rows == FILE_COUNTS


def _bad_rows(kind: str) -> list[dict]:
    row = _mem1_row(["Who wrote Hamlet?", "What is the capital of France?"], [["Shakespeare"], ["Paris"]], [0, 1])
    if kind == "no_prompt":
        del row["prompt"]
    elif kind == "prompt_str":
        row["prompt"] = row["prompt"][0]["content"]
    elif kind == "bad_count":
        row["reward_model"]["ground_truth"]["target"] = [["Shakespeare"], ["Paris"], ["1945"]]
    return [row]


def bad_input(case: str, tmp_path: Path, data: dict[str, Path]) -> tuple[Path, list[str], list[str]]:
    """(config file, overrides, what the error line must name) for one bad input."""
    tasks, corpus = str(data["tasks"]), str(data["corpus"])
    with_file = [f"data.source={tasks}", f"retriever.corpus={corpus}"]
    if case in ("no_prompt", "prompt_str", "bad_count"):
        path = _write_rows(_bad_rows(case), tmp_path / f"{case}.parquet")
        what = {"no_prompt": "missing column 'prompt'", "prompt_str": "column 'prompt' has type string",
                "bad_count": "row 0: found 2 questions"}[case]  # fmt: skip
        return CONFIG, [f"data.source={path}"], ["data.source", f"{case}.parquet", what]
    if case == "missing file":
        return CONFIG, [f"data.source={tmp_path / 'nope.parquet'}"], ["data.source", "nope.parquet", "does not exist"]
    if case == "unreadable parquet":
        junk = tmp_path / "junk.parquet"
        junk.write_bytes(b"PAR1" + b"\0" * 64)
        return CONFIG, [f"data.source={junk}"], ["data.source", "junk.parquet", "not a readable parquet file"]
    if case == "n not in file":
        return CONFIG, [*with_file, "data.n_values=[1, 4]"], ["data.n_values", "test.parquet", "N = 4", "the file has N = 1, 2, 3"]
    if case == "unknown key":
        return CONFIG, ["data.sorce=world"], [str(CONFIG), "data.sorce: unknown key", "source"]
    if case == "bad yaml override":
        return CONFIG, ["data.n_values=[1, 2"], ["data.n_values", "not valid YAML"]
    if case == "bad yaml file":
        bad = tmp_path / "bad.yaml"
        bad.write_text("data:\n  n_values: [1, 2\n  seed: 0\n")
        return bad, [], ["bad.yaml", "line 3", "not valid YAML"]
    if case == "missing corpus":
        return CONFIG, [f"data.source={tasks}", "data.n_values=[1]", f"retriever.corpus={tmp_path / 'nope.jsonl'}"], ["retriever.corpus", "nope.jsonl", "is not a file"]
    assert case == "no corpus"
    return CONFIG, [f"data.source={tasks}", "data.n_values=[1]"], ["data.source", "test.parquet", "retriever.corpus"]


CASES = ["missing file", "unreadable parquet", "no_prompt", "prompt_str", "bad_count", "n not in file",
         "unknown key", "bad yaml override", "bad yaml file", "no corpus", "missing corpus"]  # fmt: skip


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code = cli.main(argv)
    stdout, stderr = capsys.readouterr()
    return code, stdout, stderr


def assert_one_line_error(code: int, stdout: str, stderr: str, expected: list[str]) -> None:
    assert code == 2, stderr
    assert "Traceback" not in stderr and stdout == ""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    for text in expected:
        assert text in lines[0], (text, lines[0])


@pytest.mark.parametrize("case", CASES)
def test_bad_input_to_eval_is_one_line_and_exit_code_2(case, tiny_model_dir, data, tmp_path, capsys):
    config, extra, expected = bad_input(case, tmp_path, data)
    argv = ["eval", str(config), "-o", f"output_dir={tmp_path / 'runs'}", "-o", f"model.name={tiny_model_dir}"]
    for o in extra:
        argv += ["-o", o]
    with mock.patch.dict(os.environ, {"MEM1_HOME": str(tmp_path / "home")}):
        assert_one_line_error(*run_cli(argv, capsys), expected)
    if case != "no corpus":  # found when the job opens its retriever; everything else before it starts
        assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("command", ["train", "sft", "main"])
@pytest.mark.parametrize("case", ["n not in file", "prompt_str"])
def test_bad_data_is_one_line_and_exit_code_2_in_every_command(command, case, data, tmp_path, capsys):
    _, extra, expected = bad_input(case, tmp_path, data)
    config = CONFIGS / {"train": "train_qa_grpo.yaml", "sft": "sft_qa.yaml", "main": "eval_qa.yaml"}[command]
    flag = "-e" if command == "main" else "-o"
    argv = ["main"] if command == "main" else [command, str(config)]
    for o in [f"output_dir={tmp_path / 'runs'}", *extra]:
        argv += [flag, o]
    assert_one_line_error(*run_cli(argv, capsys), [str(config), *expected])
    assert not (tmp_path / "runs").exists()
