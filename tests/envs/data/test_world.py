"""The generated world: deterministic, made-up unique names, and every question answerable
from the passages (each hop's fact stated in a passage about the hop's subject)."""

import hashlib
import os
import re
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from envs.data import SIZES, World, generate_world, split_of
from envs.retrieval.corpus import read_corpus_jsonl

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module", params=[("default", 0), ("small", 1), ("small", 7)], ids=lambda p: f"{p[0]}-{p[1]}")
def world(request) -> World:
    size, seed = request.param
    return generate_world(seed=seed, size=size)


@pytest.fixture(scope="module")
def passages_by_title(world):
    by_title = defaultdict(list)
    for d in world.documents:
        by_title[d.title].append(d.text)
    return by_title


def _mentions(text: str, phrase: str) -> bool:
    return re.search(rf"(?<![\w,]){re.escape(phrase)}(?![\w]|,\d)", text) is not None


def test_same_seed_gives_byte_identical_files_and_another_seed_does_not(tmp_path):
    a = generate_world(seed=3, size="small").write(tmp_path / "a")
    b = generate_world(seed=3, size="small").write(tmp_path / "b")
    c = generate_world(seed=4, size="small").write(tmp_path / "c")
    assert a.corpus.read_bytes() == b.corpus.read_bytes()
    for split in ("train", "test"):
        assert a.questions[split].read_bytes() == b.questions[split].read_bytes()
    assert a.corpus.read_bytes() != c.corpus.read_bytes()
    assert a.questions["test"].read_bytes() != c.questions["test"].read_bytes()
    # and the corpus file holds exactly the world's documents
    assert tuple(read_corpus_jsonl(a.corpus)) == generate_world(seed=3, size="small").documents


def test_generation_does_not_depend_on_the_interpreter_hash_seed():
    # str hashing and set order change with PYTHONHASHSEED; the world must not
    code = (
        "import hashlib; from envs.data import generate_world; w = generate_world(seed=1, size='small'); "
        "print(hashlib.sha256(repr((w.documents, w.items)).encode()).hexdigest())"
    )
    digests = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        run = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, check=True)
        digests.add(run.stdout.strip())
    w = generate_world(seed=1, size="small")
    assert digests == {hashlib.sha256(repr((w.documents, w.items)).encode()).hexdigest()}


def test_default_size_is_large_enough_for_16_objective_tasks():
    world = generate_world(seed=0)
    kinds = Counter(e.kind for e in world.entities)
    assert set(kinds) == {"country", "city", "river", "university", "person", "company", "book", "film"}
    assert 300 <= len(world.entities) <= 700
    assert len(world.documents) >= 1000
    hops = Counter(it.hops for it in world.items)
    assert len(world.items) >= 1000 and hops[1] > 0 and hops[2] >= 300
    assert set(hops) == {1, 2}


def test_names_and_aliases_are_unique_across_the_world(world):
    names = [e.name for e in world.entities]
    assert len(set(names)) == len(names)
    owner = {}
    for e in world.entities:
        for alias in e.aliases:
            key = alias.lower()
            assert owner.setdefault(key, e.id) == e.id, f"alias {alias!r} names {owner[key]} and {e.id}"
    assert all(e.aliases[0] == e.name for e in world.entities)
    people = [e for e in world.entities if e.kind == "person"]
    assert all(e.aliases == (e.name, e.attrs["surname"]) for e in people)


def test_questions_are_well_formed_and_unique(world):
    questions = [it.question for it in world.items]
    assert len(set(questions)) == len(questions)  # one question text, one item, one answer
    assert len({it.id for it in world.items}) == len(world.items)
    assert all(q.endswith("?") and ";" not in q for q in questions)  # ';' separates composed questions
    assert all(it.source == "world" and it.hops == len(world.evidence[it.id]) for it in world.items)


def test_every_hop_is_stated_in_a_passage_about_its_subject(world, passages_by_title):
    for it in world.items:
        facts = world.evidence[it.id]
        for k, fact in enumerate(facts):
            subject = world.entity(fact.subject)
            stated = world.stated(fact)
            assert any(_mentions(t, stated) for t in passages_by_title[subject.name]), (it.question, fact)
            if k + 1 < len(facts):  # the bridge: this hop's object is the next hop's subject
                assert facts[k + 1].subject == fact.object and world.is_entity(fact.object)
        assert world.stated(facts[-1]) in it.answers  # the gold answer is what the passage says
        assert world.entity(facts[0].subject).name in it.question


def test_two_hop_questions_cannot_be_answered_from_the_first_entity_alone(world, passages_by_title):
    for it in world.items:
        first, last = world.evidence[it.id][0], world.evidence[it.id][-1]
        if it.hops != 2 or not world.is_entity(last.object):
            continue
        answer = world.entity(last.object).name
        first_texts = passages_by_title[world.entity(first.subject).name]
        assert not any(_mentions(t, answer) for t in first_texts), it.question


def test_a_person_has_one_birthplace_in_their_passages(world, passages_by_title):
    # unambiguity seen from the text: every "born in <City>" about a person names the same city
    pattern = re.compile(r"[Bb]orn in (?:\d{4} in )?([A-Z][a-z]+)")
    for e in world.entities:
        if e.kind != "person":
            continue
        cities = {m for t in passages_by_title[e.name] for m in pattern.findall(t)}
        assert cities == {world.entity(e.attrs["born_in"]).name}, e.name


def test_passages_are_short_and_name_their_entity(world):
    aliases = {e.name: e.aliases for e in world.entities}
    for d in world.documents:
        sentences = [s for s in re.split(r"(?<=[.])\s+(?=[A-Z])", d.text) if s]
        assert 1 <= len(sentences) <= 4 and len(d.text) < 400, d.contents
        assert any(_mentions(d.text, a) for a in aliases[d.title]), d.contents  # a search for the name finds it


def test_split_is_deterministic_per_entity_and_both_sides_are_used(world):
    train, test = world.split_items("train"), world.split_items("test")
    assert len(train) + len(test) == len(world.items)
    assert 0.1 < len(test) / len(world.items) < 0.3
    side = {}
    for split, items in (("train", train), ("test", test)):
        for it in items:
            subject = world.evidence[it.id][0].subject
            assert side.setdefault(subject, split) == split  # an entity's questions stay together
    assert split_of("person-0001", 0.2) == split_of("person-0001", 0.2)
    assert world.split_items(None) == world.items


def test_sizes_presets_ints_and_errors():
    small = generate_world(seed=0, size="small")
    assert len(small.entities) == SIZES["small"].total
    assert len(small.entities) < 200 and len(small.items) > 500
    scaled = generate_world(seed=0, size=1000)
    assert 900 <= len(scaled.entities) <= 1100
    assert len({e.name for e in scaled.entities}) == len(scaled.entities)
    with pytest.raises(ValueError, match="world size"):
        generate_world(size="huge")
    with pytest.raises(ValueError, match="world size"):
        generate_world(size=10)
    with pytest.raises(ValueError, match="split"):
        small.split_items("dev")
