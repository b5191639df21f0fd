"""Task sets from the world and from loaded questions, and the data folder `mem1 data build`
writes: distinct entities per task, determinism, and a round trip through the files."""

import hashlib
import json

import pytest

from envs.data import build_data, build_task_set, generate_world, load_items, load_tasks, write_items_parquet


@pytest.fixture(scope="module")
def world():
    return generate_world(seed=0)


def test_16_objective_tasks_ask_about_16_distinct_entities(world):
    sets = build_task_set(world, n_values=(16,), tasks_per_n=60, seed=0, split="test")
    tasks = sets[16]
    assert len(tasks) == 60 and len({t.id for t in tasks}) == 60
    test_ids = {it.id for it in world.split_items("test")}
    for t in tasks:
        assert t.num_objectives == 16 and len(set(t.questions)) == 16
        ids = t.meta["item_ids"]
        assert set(ids) <= test_ids and t.meta["split"] == "test"
        entities = [e for item_id in ids for e in world.search_entities(item_id)]
        assert len(entities) == len(set(entities)), t.id  # no entity needs looking up twice
        subjects = {world.entity(world.evidence[i][0].subject).name for i in ids}
        assert len(subjects) == 16 and all(any(s in q for q in t.questions) for s in subjects)
    # the answers travel with the questions, in order
    by_id = {it.id: it for it in world.items}
    assert all(t.answers == tuple(by_id[i].answers for i in t.meta["item_ids"]) for t in tasks)


def test_task_sets_are_deterministic_and_seed_dependent(world):
    a = build_task_set(world, (1, 2, 8), 20, seed=5, split="train")
    b = build_task_set(world, (1, 2, 8), 20, seed=5, split="train")
    c = build_task_set(world, (1, 2, 8), 20, seed=6, split="train")
    assert a == b and a != c
    assert {n: len(ts) for n, ts in a.items()} == {1: 20, 2: 20, 8: 20}
    train_ids = {it.id for it in world.split_items("train")}
    assert all(set(t.meta["item_ids"]) <= train_ids for ts in a.values() for t in ts)


def test_more_objectives_than_distinct_entities_is_a_clear_error():
    small = generate_world(seed=0, size="small")
    with pytest.raises(ValueError, match=r"world-test-n500: only \d+ questions about distinct entities.*larger world"):
        build_task_set(small, (500,), 1, split="test")
    with pytest.raises(ValueError, match="n_values must be positive"):
        build_task_set(small, (0,), 1)


def test_hop_filter_keeps_only_multi_hop_questions(world):
    tasks = build_task_set(world, (4,), 10, split="test", hops=(2,))[4]
    assert all(h == 2 for t in tasks for h in t.meta["hops"])


def test_task_sets_from_loaded_items(world, tmp_path):
    path = write_items_parquet(world.split_items("test")[:40], tmp_path / "q.parquet", split="test")
    sets = build_task_set(path, (3,), 5, seed=1, split="test")
    assert [t.id for t in sets[3]] == [f"world-test-n3-{i}" for i in range(5)]
    assert all(len(set(t.questions)) == 3 for t in sets[3])
    assert sets == build_task_set(load_items(path), (3,), 5, seed=1, split="test")


def test_build_data_writes_a_reproducible_folder(tmp_path):
    a = build_data(tmp_path / "a", seed=2, size="small", n_values=(1, 4), tasks_per_n=12)
    b = build_data(tmp_path / "b", seed=2, size="small", n_values=(1, 4), tasks_per_n=12)
    names = [p.relative_to(a.directory).as_posix() for p in a.paths()]
    assert names == [
        "corpus.jsonl", "questions_train.parquet", "questions_test.parquet", "tasks/train_n1.parquet",
        "tasks/train_n4.parquet", "tasks/test_n1.parquet", "tasks/test_n4.parquet", "manifest.json",
    ]  # fmt: skip
    for pa_, pb in zip(a.paths(), b.paths()):
        assert pa_.read_bytes() == pb.read_bytes(), pa_.name
    manifest = json.loads(a.manifest.read_text())
    assert manifest["seed"] == 2 and manifest["passages"] == len(generate_world(2, "small").documents)
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((a.directory / name).read_bytes()).hexdigest() == digest
    # the task files load back to exactly the task sets
    world = generate_world(seed=2, size="small")
    expected = build_task_set(world, (1, 4), 12, seed=2, split="test")
    assert load_tasks(a.tasks["test"][4]) == expected[4]
    assert len(load_items(a.questions["train"])) == len(world.split_items("train"))
