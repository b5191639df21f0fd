"""QAEnv over a real BM25 index of the generated world (written to a temporary folder as
Search-R1 JSONL): searches return reference-formatted passages with the turn budget, answers
are scored per objective, malformed output never raises, the budget truncates, and a dead
retriever becomes an observation."""

import re
import socket

import pytest

from envs import QAConfig, QAEnv, Task
from envs.data import generate_world
from envs.retrieval import HttpRetriever, build_or_load_index
from envs.tasks import compose_tasks


@pytest.fixture(scope="module")
def world():
    return generate_world(0, "small")


@pytest.fixture(scope="module")
def index(world, tmp_path_factory):
    files = world.write(tmp_path_factory.mktemp("world"))
    return build_or_load_index(files.corpus, "bm25")


@pytest.fixture(scope="module")
def items(world):
    """Three one-hop questions about three different cities (gold answers known)."""
    by_key = {it.id: it for it in world.items}
    chosen = [by_key[f"world0-city-000{i}-country"] for i in range(3)]
    assert all(it.hops == 1 for it in chosen)
    return chosen


def make_task(items, n: int) -> Task:
    return compose_tasks(items[:n], n, 1, seed=0, prefix="t-")[0]


def task_of(items) -> Task:
    """The items in the given order (compose_tasks shuffles)."""
    return Task(id="t", questions=tuple(it.question for it in items), answers=tuple(it.answers for it in items))


def city_of(item) -> str:
    return re.search(r"city of (.+) located", item.question).group(1)


def env_for(index, items, n=1, **config) -> tuple[QAEnv, str, dict]:
    env = QAEnv(index, QAConfig(**config))
    prompt, info = env.reset(options={"task": task_of(items[:n])})
    return env, prompt, info


def search(query: str, state: str = "notes") -> str:
    return f"<think>{state}</think><search>{query}</search>"


def answer(text: str) -> str:
    return f"<think>done</think><answer>{text}</answer>"


def test_reset_prompt_budget_and_demonstration(index, items):
    env, prompt, info = env_for(index, items, n=3)
    assert "Answer the following questions: " + "; ".join(it.question for it in items) in prompt
    assert info["num_objectives"] == 3 and info["task_id"] == "t"
    assert info["max_turns"] == 2 + 2 * 3  # base_turns + turns_per_objective * N
    demo = info["demonstration"]
    assert [role for role, _ in demo] == ["user", "assistant"] * 3
    assert "<answer>" in demo[-1][1]
    _, _, info = env_for(index, items, n=3, few_shot=False)
    assert "demonstration" not in info
    _, _, info = env_for(index, items, n=3, max_turns=5)
    assert info["max_turns"] == 5


def test_search_returns_passages_with_turns_left(index, items):
    env, _, _ = env_for(index, items, n=1)  # budget 4
    city = city_of(items[0])
    obs, reward, terminated, truncated, info = env.step(search(f"{city} country"))
    assert (reward, terminated, truncated) == (0.0, False, False)
    assert obs.startswith("<information>You have 3 turns left.\n\nDoc 1(Title: ") and obs.endswith("</information>")
    passages = obs[obs.index("Doc 1") : -len("</information>")].split("\n")
    assert 1 <= len(passages) <= 3
    assert [p.split("(Title: ")[0] for p in passages] == [f"Doc {i}" for i in range(1, len(passages) + 1)]
    assert any(p.startswith(f"Doc {i}(Title: {city}) {city} ") for i, p in enumerate(passages, 1))
    hits = index.search([f"{city} country"], 3)[0]  # the reference's layout, hit for hit
    assert passages == [f"Doc {i}(Title: {h.document.title}) {h.document.text}" for i, h in enumerate(hits, 1)]
    assert info["action"] == "search" and info["valid"] and info["doc_ids"] == [h.document.id for h in hits]
    assert info["state_span"] == (0, len("<think>notes</think>"))


def test_last_turn_hint_says_answer_now(index, items):
    env, _, _ = env_for(index, items, n=1, max_turns=3)
    obs, *_ = env.step(search("capital"))
    assert "You have 2 turns left." in obs
    obs, *_ = env.step(search("capital"))
    assert "You have 1 turn left: you must answer now." in obs


@pytest.mark.parametrize(
    "config, expected",
    [
        ({}, 0.5),  # mean EM
        ({"reward": "f1"}, None),  # mean F1 (computed below)
        ({"reward_reduce": "sum"}, 1.0),  # number of objectives right
        ({"reward": "f1", "reward_reduce": "sum"}, None),
    ],
)
def test_answer_ends_episode_with_per_objective_scores(index, items, config, expected):
    env, _, _ = env_for(index, items, n=2, **config)
    gold0 = items[0].answers[0]
    env.step(search("anything"))
    obs, reward, terminated, truncated, info = env.step(answer(f"the {gold0}; Nowhere Land"))
    assert (obs, terminated, truncated) == ("", True, False)
    assert info["action"] == "answer" and info["valid"]
    assert info["em"] == [1.0, 0.0] and info["em_sum"] == 1.0 and info["em_mean"] == 0.5
    assert info["f1"][0] == 1.0 and 0.0 <= info["f1"][1] < 1.0
    assert info["answer"] == f"the {gold0}; Nowhere Land"
    assert (info["turns"], info["searches"], info["invalid_turns"]) == (2, 1, 0)
    f1 = info["f1"]
    if expected is None:
        expected = sum(f1) / 2 if config.get("reward_reduce", "mean") == "mean" else sum(f1)
    assert reward == pytest.approx(expected)


def test_three_objectives_one_wrong(index, items):
    env, _, _ = env_for(index, items, n=3)
    golds = [it.answers[0] for it in items]
    _, reward, terminated, _, info = env.step(answer(f"{golds[0]}; {golds[1].upper()}; wrong place"))
    assert terminated
    assert info["em"] == [1.0, 1.0, 0.0]
    assert reward == pytest.approx(2 / 3)


def test_missing_objectives_score_zero(index, items):
    env, _, _ = env_for(index, items, n=3)
    _, reward, _, _, info = env.step(answer(items[0].answers[0]))
    assert info["em"] == [1.0, 0.0, 0.0] and reward == pytest.approx(1 / 3)


MALFORMED = {
    "no tag": ("I think it is Paris.", "no action"),
    "unclosed tag": ("<think>x</think><search>capital of", "not closed"),
    "several actions": ("<think>x</think><search>a <answer>b</answer>", "several actions"),
    "empty query": ("<think>x</think><search>   </search>", "empty"),
    "huge output": ("<think>" + "notes " * 5000 + "</think><search>q</search>", "too long"),
    "no state": ("<search>capital</search>", "summary"),
    "binary junk": ("\x00\xff<<>></search>>" * 50, "do not match"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_output_gets_corrective_observation(index, items, case):
    text, words = MALFORMED[case]
    env, _, _ = env_for(index, items, n=1, format_penalty=0.25)
    obs, reward, terminated, truncated, info = env.step(text)
    assert not terminated and not truncated
    assert reward == pytest.approx(-0.25)
    assert info["action"] == "invalid" and not info["valid"] and words in info["error"]
    assert obs.startswith("<information>You have 3 turns left.\n\nYour last output was invalid: ")
    assert words in obs
    # the episode goes on: a valid search now works and the invalid turn is counted
    obs, reward, terminated, truncated, info = env.step(search(city_of(items[0])))
    assert "Doc 1(Title: " in obs and (reward, terminated, truncated) == (0.0, False, False)
    _, _, terminated, _, info = env.step(answer("x"))
    assert terminated and info["invalid_turns"] == 1 and info["searches"] == 1


def test_turn_budget_truncates_with_score_zero(index, items):
    env, _, _ = env_for(index, items, n=2, max_turns=2, format_penalty=0.1)
    obs, reward, terminated, truncated, _ = env.step(search("first"))
    assert not (terminated or truncated) and "must answer now" in obs
    obs, reward, terminated, truncated, info = env.step(search("second"))
    assert (obs, terminated, truncated) == ("", False, True)
    assert reward == 0.0 and info["em"] == [0.0, 0.0] and info["answer"] is None and info["turns"] == 2
    # a malformed last turn: the penalty, then the zero score
    env, _, _ = env_for(index, items, n=2, max_turns=1, format_penalty=0.1)
    _, reward, terminated, truncated, info = env.step("no tags at all")
    assert truncated and not terminated and reward == pytest.approx(-0.1) and info["em_sum"] == 0.0


def test_invalid_streak_ends_the_episode_with_the_reward_of_playing_it_out(index, items):
    """After k malformed turns in a row the episode stops; the skipped turns are charged as
    malformed, so the return equals the played-out one (stopping early never pays). A valid
    turn resets the streak."""
    played, stopped = (env_for(index, items, n=2, format_penalty=0.1, max_invalid_streak=k)[0] for k in (None, 2))
    total = {}
    for name, env in (("played", played), ("stopped", stopped)):
        total[name], steps = 0.0, 0
        for text in ["junk", search(city_of(items[0])), "junk", "junk", "junk", "junk"]:
            _, reward, terminated, truncated, info = env.step(text)
            total[name] += reward
            steps += 1
            if terminated or truncated:
                break
        total[name + "_steps"] = steps
        total[name + "_info"] = info
    assert total["played_steps"] == 6 and total["stopped_steps"] == 4  # junk, search (reset), junk, junk
    assert total["stopped"] == pytest.approx(total["played"]) == pytest.approx(-0.5)
    assert total["stopped_info"]["stopped"] == "2 malformed turns in a row" and "stopped" not in total["played_info"]
    assert total["stopped_info"]["invalid_turns"] == 3 and total["stopped_info"]["em"] == [0.0, 0.0]
    with pytest.raises(ValueError, match="env.max_invalid_streak=0"):
        QAConfig(max_invalid_streak=0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dead_retriever_becomes_an_observation(items):
    dead = HttpRetriever(f"http://127.0.0.1:{free_port()}", timeout=0.5, retries=0)
    env = QAEnv(dead, QAConfig())
    env.reset(options={"task": task_of(items[:1])})
    obs, reward, terminated, truncated, info = env.step(search("anything"))
    assert (reward, terminated, truncated) == (0.0, False, False)
    assert "search failed" in obs and obs.startswith("<information>You have 3 turns left.")
    assert info["action"] == "search" and info["valid"] and "did not answer" in info["search_error"]
    _, _, terminated, _, info = env.step(answer(items[0].answers[0]))
    assert terminated and info["em"] == [1.0]


def test_query_with_no_known_word_says_no_results(index, items):
    env, _, _ = env_for(index, items, n=1)
    obs, *_ = env.step(search("zzqxv wpfjk"))
    assert obs.endswith("\n\nNo results.</information>")


def test_misuse_is_a_clear_error(index, items):
    env = QAEnv(index)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(search("q"))
    with pytest.raises(ValueError, match="task"):
        env.reset(options={"task": "not a task"})
    with pytest.raises(ValueError, match="env.reward"):
        QAConfig(reward="accuracy")
    with pytest.raises(ValueError, match="reward_reduce"):
        QAConfig(reward_reduce="max")


def test_reset_starts_a_fresh_episode(index, items):
    env, _, _ = env_for(index, items, n=1, max_turns=2)
    env.step("junk")
    env.reset(options={"task": task_of(items[1:2])})
    obs, *_ = env.step(search("q"))
    assert "You have 1 turn left" in obs  # the turn counter restarted
    _, reward, _, _, info = env.step(answer(items[1].answers[0]))
    assert info["invalid_turns"] == 0 and reward == 1.0


@pytest.mark.parametrize(
    "text, credited",
    [
        ("<think>Notes: two questions left.</think>", True),  # closed state, no action
        ("<think>Notes: two questions left.</think><search>x", True),  # closed state, unclosed action
        ("<think>Notes: two questions left. <search>x</search>", False),  # state never closed
        ("no tags at all", False),
    ],
)
def test_state_credit_forgives_part_of_the_penalty_for_a_closed_state(index, items, text, credited):
    env, _, _ = env_for(index, items, n=1, format_penalty=0.2, state_credit=0.5)
    _, reward, _, _, info = env.step(text)
    assert not info["valid"]
    assert reward == pytest.approx(-0.1 if credited else -0.2)
    # off by default: the full penalty whatever the state
    env, _, _ = env_for(index, items, n=1, format_penalty=0.2)
    assert env.step(text)[1] == pytest.approx(-0.2)


def test_state_credit_out_of_range_is_named():
    with pytest.raises(ValueError, match="state_credit"):
        QAConfig(state_credit=1.5)
