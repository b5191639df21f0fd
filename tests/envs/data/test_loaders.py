"""Loaders and writers on files in the real formats, written here the way the reference
scripts write them (HotpotQA JSON; Search-R1's nq_search.py rows; MEM1's
qa_search_*_merge_multi.py rows), and clear errors on malformed files."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from envs.data import (
    DataFormatError,
    detect_format,
    hotpotqa_documents,
    load_items,
    load_tasks,
    read_mem1_tasks,
    write_items_parquet,
    write_tasks_parquet,
)
from envs.tasks import QAItem, Task

HOTPOT = [
    {
        "_id": "5a8b57f25542995d1e6f1371", "question": "Were Scott Derrickson and Ed Wood of the same nationality?",
        "answer": "yes", "type": "comparison", "level": "hard",
        "supporting_facts": [["Scott Derrickson", 0], ["Ed Wood", 0]],
        "context": [
            ["Ed Wood", ["Edward Davis Wood Jr. was an American filmmaker.", " He made cult films."]],
            ["Scott Derrickson", ["Scott Derrickson is an American director.", "He lives in Los Angeles."]],
        ],
    },
    {
        "_id": "5a8c7595554299585d9e36b6", "question": "What government position was held by the woman who portrayed Corliss Archer?",
        "answer": "Chief of Protocol", "type": "bridge", "level": "medium",
        "supporting_facts": [["Kiss and Tell (1945 film)", 0]],
        "context": [
            ["Ed Wood", ["A duplicate title: the first one wins."]],
            ["Kiss and Tell (1945 film)", ["Kiss and Tell is a 1945 comedy film."]],
        ],
    },
]  # fmt: skip

MEM1_INSTRUCTION = "You will answer multiple complex questions using iterative reasoning, summarization, and web search.\n\n"


def _search_r1_row(i, question, answers, source="nq"):
    # nq_search.py: the FlashRAG columns (id, question, golden_answers) kept, plus its own
    question = question.strip() if question.strip().endswith("?") else question.strip() + "?"
    return {
        "id": f"test_{i}", "question": question, "golden_answers": answers, "data_source": source,
        "prompt": [{"role": "user", "content": f"Answer the given question. ... Question: {question}\n"}],
        "ability": "fact-reasoning",
        "reward_model": {"style": "rule", "ground_truth": {"target": answers}},
        "extra_info": {"split": "test", "index": i},
    }  # fmt: skip


def _mem1_row(questions, answers, indices, source="nq"):
    # qa_search_test_merge_multi.py: '?' appended where missing, joined by '; '
    questions = [q if q[-1] == "?" else q + "?" for q in questions]
    return {
        "data_source": source,
        "prompt": [{"role": "user", "content": MEM1_INSTRUCTION + "Answer the following questions: " + "; ".join(questions) + "\n"}],
        "ability": "fact-reasoning",
        "reward_model": {"style": "rule", "ground_truth": {"target": answers}},
        "extra_info": {"split": "test", "indices": indices},
    }  # fmt: skip


def _write_rows(rows, path):
    pq.write_table(pa.Table.from_pylist(rows), path)  # nested struct/list columns, types inferred
    return path


@pytest.fixture
def hotpot_file(tmp_path):
    path = tmp_path / "hotpot_dev_distractor_v1.json"
    path.write_text(json.dumps(HOTPOT), encoding="utf-8")
    return path


@pytest.fixture
def search_r1_file(tmp_path):
    rows = [
        _search_r1_row(0, "who got the first nobel prize in physics", ["Wilhelm Conrad Röntgen"]),
        _search_r1_row(1, "when is the next deadpool movie being released?", ["May 18, 2018", "2018"]),
        _search_r1_row(2, "which band sang dancing queen", ["ABBA"], source="hotpotqa"),
    ]
    return _write_rows(rows, tmp_path / "test.parquet")


@pytest.fixture
def mem1_file(tmp_path):
    rows = [
        _mem1_row(["who sang dancing queen", "which is larger; the sun or the moon?", "what year did ww2 end"],
                  [["ABBA"], ["the sun", "sun"], ["1945"]], [0, 1, 2]),
        _mem1_row(["capital of france?", "who wrote hamlet?", "tallest mountain"],
                  [["Paris"], ["William Shakespeare", "Shakespeare"], ["Mount Everest"]], [3, 4, 5], source="hotpotqa"),
    ]  # fmt: skip
    return _write_rows(rows, tmp_path / "train.parquet")


def test_hotpotqa_questions_and_documents(hotpot_file):
    items = load_items(hotpot_file)
    assert [it.id for it in items] == ["5a8b57f25542995d1e6f1371", "5a8c7595554299585d9e36b6"]
    assert items[1].answers == ("Chief of Protocol",) and all(it.hops == 2 and it.source == "hotpotqa" for it in items)
    docs = hotpotqa_documents(hotpot_file)
    assert [d.title for d in docs] == ["Ed Wood", "Scott Derrickson", "Kiss and Tell (1945 film)"]  # deduplicated
    assert docs[0].text == "Edward Davis Wood Jr. was an American filmmaker. He made cult films."
    assert docs[1].text == "Scott Derrickson is an American director. He lives in Los Angeles."  # space added
    assert [d.id for d in docs] == ["0", "1", "2"]
    assert detect_format(hotpot_file) == "hotpotqa"
    tasks = load_tasks(hotpot_file)  # single questions become 1-objective tasks
    assert tasks[0].questions == (HOTPOT[0]["question"],) and tasks[0].answers == (("yes",),)


def test_search_r1_parquet(search_r1_file):
    assert detect_format(search_r1_file) == "search_r1"
    items = load_items(search_r1_file)
    assert items[0] == QAItem("test_0", "who got the first nobel prize in physics?", ("Wilhelm Conrad Röntgen",), "nq", 1)
    assert items[1].answers == ("May 18, 2018", "2018")
    assert items[2].source == "hotpotqa" and items[2].hops == 2  # multi-hop source
    tasks = load_tasks(search_r1_file)
    assert [t.num_objectives for t in tasks] == [1, 1, 1] and tasks[1].answers == (("May 18, 2018", "2018"),)


def test_search_r1_without_golden_answers_or_question_columns(tmp_path):
    rows = [_search_r1_row(0, "who sang dancing queen", ["ABBA"])]
    for r in rows:
        del r["golden_answers"], r["question"]
    items = load_items(_write_rows(rows, tmp_path / "x.parquet"))
    assert items[0].question == "who sang dancing queen?" and items[0].answers == ("ABBA",)


def test_merged_search_r1_file_with_repeated_ids_gets_unique_ids(tmp_path):
    rows = [_search_r1_row(0, "q one", ["a"], "nq"), _search_r1_row(0, "q two", ["b"], "triviaqa")]
    items = load_items(_write_rows(rows, tmp_path / "merged.parquet"))
    assert len({it.id for it in items}) == 2 and items[1].id.startswith("triviaqa")


def test_mem1_multi_objective_parquet(mem1_file):
    assert detect_format(mem1_file) == "mem1"
    tasks = load_tasks(mem1_file)
    assert len(tasks) == 2
    first = tasks[0]
    # a ';' inside a question does not split it: only '?; ' separates questions
    assert first.questions == ("who sang dancing queen?", "which is larger; the sun or the moon?", "what year did ww2 end?")
    assert first.answers == (("ABBA",), ("the sun", "sun"), ("1945",))
    assert first.source == "nq" and first.meta["indices"] == [0, 1, 2]
    assert tasks[1].source == "hotpotqa" and tasks[1].answers[1] == ("William Shakespeare", "Shakespeare")
    assert len({t.id for t in tasks}) == 2
    with pytest.raises(DataFormatError, match="use load_tasks"):
        load_items(mem1_file)


def test_write_tasks_parquet_round_trips_and_matches_the_reference_layout(tmp_path):
    tasks = [
        Task("t0", ("Who founded Zentrix Labs?", "In what year was Osk founded?"), (("Ana Vel", "Vel"), ("1887",)),
             "world", {"item_ids": ["a", "b"], "hops": [1, 1], "split": "test"}),
        Task("t1", ("What is the capital of Tarsk?",), (("Velm",),), "world", {"item_ids": ["c"], "hops": [2]}),
    ]  # fmt: skip
    path = write_tasks_parquet(tasks, tmp_path / "test_n2.parquet", split="test", instruction="Be brief.\n")
    assert load_tasks(path) == tasks
    # the reference reads rows with pandas: prompt[0]["content"], reward_model.ground_truth.target
    import pandas as pd

    row = pd.read_parquet(path).iloc[0]
    content = row["prompt"][0]["content"]
    assert content == "Be brief.\nAnswer the following questions: Who founded Zentrix Labs?; In what year was Osk founded?\n"
    assert [list(t) for t in row["reward_model"]["ground_truth"]["target"]] == [["Ana Vel", "Vel"], ["1887"]]
    assert row["extra_info"]["split"] == "test" and row["ability"] == "fact-reasoning"
    schema = pq.read_schema(path)
    assert schema.field("reward_model").type.field("ground_truth").type.field("target").type == pa.list_(pa.list_(pa.string()))


def test_writer_refuses_a_task_it_could_not_read_back(tmp_path):
    task = Task("bad", ("Is it red?; or blue?", "Why?"), (("red",), ("because",)))
    with pytest.raises(DataFormatError, match="task 'bad': found 3 questions"):
        write_tasks_parquet([task], tmp_path / "bad.parquet")


def test_reference_file_survives_our_writer(mem1_file, tmp_path):
    tasks = read_mem1_tasks(mem1_file)
    again = load_tasks(write_tasks_parquet(tasks, tmp_path / "again.parquet"))
    assert again == tasks


def test_items_round_trip_through_search_r1_parquet(tmp_path):
    items = [QAItem("w-1", "In which city was Ana Vel born?", ("Tarsk",), "world", 1),
             QAItem("w-2", "In which country was Ana Vel born?", ("Osk",), "world", 2)]  # fmt: skip
    path = write_items_parquet(items, tmp_path / "questions.parquet", split="train")
    assert detect_format(path) == "search_r1"
    assert load_items(path) == items


def test_missing_column_names_file_and_column(tmp_path):
    rows = [_search_r1_row(0, "q", ["a"])]
    for r in rows:
        del r["golden_answers"], r["reward_model"]
    path = _write_rows(rows, tmp_path / "no_answers.parquet")
    with pytest.raises(DataFormatError, match=r"no_answers\.parquet.*neither Search-R1.*golden_answers"):
        load_items(path)
    with pytest.raises(DataFormatError, match=r"no_prompt\.parquet: missing column 'prompt'"):
        read_mem1_tasks(_write_rows([{"reward_model": {"ground_truth": {"target": [["a"]]}}}], tmp_path / "no_prompt.parquet"))


def test_question_count_must_equal_target_count(tmp_path):
    row = _mem1_row(["q1?", "q2?", "q3?"], [["a"], ["b"], ["c"]], [0, 1, 2])
    row["reward_model"]["ground_truth"]["target"] = [["a"], ["b"]]
    path = _write_rows([_mem1_row(["x?"], [["y"]], [9]), row], tmp_path / "bad_count.parquet")
    with pytest.raises(DataFormatError, match=r"bad_count\.parquet: row 1: found 3 questions.* 2 answer lists"):
        load_tasks(path)


def test_prompt_without_questions_marker(tmp_path):
    row = _mem1_row(["q1?"], [["a"]], [0])
    row["prompt"][0]["content"] = "Question: q1?\n"
    with pytest.raises(DataFormatError, match=r"no_marker\.parquet: row 0: .*Answer the following questions"):
        load_tasks(_write_rows([row], tmp_path / "no_marker.parquet"))


def test_bad_json_and_bad_records_name_the_file(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(HOTPOT)[:-20], encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"broken\.json: not valid JSON"):
        load_items(broken)
    no_answer = tmp_path / "hotpot_test_fullwiki_v1.json"
    no_answer.write_text(json.dumps([{k: v for k, v in HOTPOT[0].items() if k != "answer"}]), encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"hotpot_test_fullwiki_v1\.json: record 0 has no 'answer'"):
        load_items(no_answer)
    not_a_list = tmp_path / "obj.json"
    not_a_list.write_text('{"_id": "x"}', encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"obj\.json: expected a JSON list"):
        load_tasks(not_a_list)
    other = tmp_path / "notes.txt"
    other.write_text("hello", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"notes\.txt: unknown data format"):
        load_items(other)
    with pytest.raises(FileNotFoundError, match="missing.parquet"):
        load_items(tmp_path / "missing.parquet")
