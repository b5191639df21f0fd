"""Data files as the source of task sets. A MEM1 multi-objective file (written here the way
the reference's qa_search_*_merge_multi.py writes its rows) plays its tasks as they are:
each task's N is its own, n_values selects among them, tasks_per_n caps each N by a seeded
draw. Every malformed file is a DataFormatError naming the file and the column or row."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from envs.data import DataFileNotFoundError, DataFormatError, build_task_set, load_tasks, read_data_file
from tests.envs.data.test_loaders import HOTPOT, _mem1_row, _search_r1_row, _write_rows

FILE_COUNTS = {1: 3, 2: 4, 3: 1}  # tasks per N in the file below


def mixed_rows() -> list[dict]:
    """Tasks of N = 1, 2 and 3 in one file, interleaved (the reference keeps one N per
    folder, but nothing stops a merged file)."""
    rows, index = [], 0
    for n, count in [(2, 2), (1, 3), (3, 1), (2, 2)]:
        for _ in range(count):
            questions = [f"question {index + k} asked here" for k in range(n)]
            answers = [[f"answer {index + k}"] for k in range(n)]
            rows.append(_mem1_row(questions, answers, list(range(index, index + n))))
            index += n
    return rows


@pytest.fixture
def task_file(tmp_path):
    return _write_rows(mixed_rows(), tmp_path / "test.parquet")


def test_a_task_file_plays_its_own_tasks_with_their_own_n(task_file):
    in_file = load_tasks(task_file)
    sets = build_task_set(task_file, (1, 2, 3), tasks_per_n=10, seed=0, split="train")
    assert {n: len(ts) for n, ts in sets.items()} == FILE_COUNTS
    for n, tasks in sets.items():
        # the file's tasks themselves, in file order: not recomposed, not renamed, split kept
        assert tasks == [t for t in in_file if t.num_objectives == n]
        assert all(t.meta["split"] == "test" for t in tasks)
    assert sets[3][0].questions == ("question 7 asked here?", "question 8 asked here?", "question 9 asked here?")
    assert sets[3][0].answers == (("answer 7",), ("answer 8",), ("answer 9",))


def test_n_values_selects_and_tasks_per_n_caps_by_a_seeded_draw(task_file):
    in_file = [t for t in load_tasks(task_file) if t.num_objectives == 2]
    draws = {}
    for seed in range(8):
        sets = build_task_set(task_file, (2,), tasks_per_n=2, seed=seed)
        assert list(sets) == [2] and len(sets[2]) == 2
        assert sets[2] == build_task_set(task_file, (2,), tasks_per_n=2, seed=seed)[2]  # deterministic
        positions = [in_file.index(t) for t in sets[2]]
        assert positions == sorted(positions)  # kept in file order
        draws[seed] = tuple(positions)
    assert len(set(draws.values())) > 1  # the seed decides which ones
    assert len(build_task_set(task_file, (1,), tasks_per_n=3, seed=5)[1]) == 3  # a cap at the count keeps all


def test_an_n_the_file_lacks_names_the_file_and_the_ns(task_file):
    with pytest.raises(DataFormatError, match=r"test\.parquet: n_values: no tasks with N = 4, 8 \(asked for N = 2, 4, 8; the file has N = 1, 2, 3\)"):
        build_task_set(task_file, (2, 4, 8), tasks_per_n=1)
    with pytest.raises(ValueError, match="hops filters single questions"):
        build_task_set(task_file, (2,), tasks_per_n=1, hops=(2,))


def test_a_question_file_composes_and_needs_n_questions(tmp_path):
    path = _write_rows([_search_r1_row(i, f"question {i}", [f"a{i}"]) for i in range(3)], tmp_path / "nq.parquet")
    sets = build_task_set(path, (1, 3), tasks_per_n=2, seed=0)
    assert [t.num_objectives for t in sets[3]] == [3, 3]  # composed from single questions
    with pytest.raises(DataFormatError, match=r"nq\.parquet: n_values: N = 4 needs as many distinct questions; the file has 3"):
        build_task_set(path, (1, 4), tasks_per_n=1)


def test_missing_unreadable_and_wrongly_typed_files_are_named(tmp_path):
    with pytest.raises(DataFileNotFoundError, match=r"nope\.parquet: data file does not exist") as missing:
        read_data_file(tmp_path / "nope.parquet")
    assert isinstance(missing.value, FileNotFoundError)  # still what callers of FileNotFoundError catch
    with pytest.raises(DataFormatError, match=r": not a file"):
        read_data_file(tmp_path)
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"PAR1" + b"\0" * 64)
    with pytest.raises(DataFormatError, match=r"junk\.parquet: not a readable parquet file"):
        read_data_file(junk)

    row = _mem1_row(["q1?"], [["a"]], [0])
    row["prompt"] = "Answer the following questions: q1?"  # a string, not chat messages
    with pytest.raises(DataFormatError, match=r"prompt_str\.parquet: column 'prompt' has type string, expected a list of \{role, content\} messages"):
        read_data_file(_write_rows([row], tmp_path / "prompt_str.parquet"))
    row = _search_r1_row(0, "q", ["a"])
    row["golden_answers"] = 7
    with pytest.raises(DataFormatError, match=r"answers_int\.parquet: column 'golden_answers' has type int64, expected a list of strings"):
        read_data_file(_write_rows([row], tmp_path / "answers_int.parquet"))
    row = _mem1_row(["q1?"], [["a"]], [0])
    row["extra_info"]["meta"] = "{not json"
    with pytest.raises(DataFormatError, match=r"bad_meta\.parquet: row 0: extra_info\.meta is not JSON"):
        read_data_file(_write_rows([row], tmp_path / "bad_meta.parquet"))
    empty_question = tmp_path / "hotpot.json"
    empty_question.write_text(json.dumps([{**HOTPOT[0], "question": " "}]), encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"hotpot\.json: record 0: .*empty question"):
        read_data_file(empty_question)


def test_a_file_is_read_once_per_version(task_file):
    kind, first = read_data_file(task_file)
    assert kind == "mem1" and read_data_file(task_file)[1] is first  # a config check and the job share one read
    pq.write_table(pa.Table.from_pylist(mixed_rows()[:2]), task_file)  # rewritten in place: read again
    assert len(read_data_file(task_file)[1]) == 2
