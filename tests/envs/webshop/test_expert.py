"""The scripted WebShop expert (envs/webshop/expert.py) played through the real rollout loop:
the generated catalog and its BM25 engine, WebShopEnv with its few-shot demonstration, the
SmolLM2 tokenizer and chat template, and `ScriptedSampler`, so the expert reads exactly the
decoded context a model would (under `mem1`: the prompt, its previous turn, the last page).
"""

import pytest

from envs.webshop import WebShopConfig, WebShopEngine, WebShopEnv
from envs.webshop.expert import WebShopExpert
from experiments.rollout import EpisodeRequest, rollout
from policies.chat import ChatFormat
from policies.memory import make_memory_policy
from policies.samplers import SamplingParams, ScriptedSampler

PARAMS = SamplingParams(temperature=0.0, max_new_tokens=256)
MAX_NOTES_TOKENS = 96  # measured: 42-82 tokens a turn over the 200 test goals


def play(goals, engine, expert, tokenizer, policy="mem1", config=WebShopConfig()):
    requests = [EpisodeRequest(g, WebShopEnv(engine, config), make_memory_policy(policy)) for g in goals]
    return rollout(requests, ScriptedSampler(expert.act, tokenizer), ChatFormat(tokenizer), PARAMS, max_model_len=1 << 16)


def pages(ep) -> list[str]:
    return [t.info["page"] for t in ep.turns]


@pytest.fixture(scope="module")
def expert(generated_catalog):
    return WebShopExpert(generated_catalog)


@pytest.fixture(scope="module")
def goals(generated_catalog):
    # The first test goals (their products sit on results page 1 or 2 of the instruction's
    # search) and the first with a single option group (wireless headphones: colour only).
    test = generated_catalog.split("test")
    return [*test[:8], next(g for g in test if len(g.goal_options) == 1)]


@pytest.fixture(scope="module")
def mem1_episodes(goals, engine, expert, tokenizer):
    return play(goals, engine, expert, tokenizer)


def assert_bought_within_budget(ep, max_turns):
    assert ep.info["terminated"] and not ep.info["truncated"] and ep.info["end_reason"] == "answer"
    assert len(ep.turns) <= max_turns and ep.turns[-1].info["action"] == "buy"
    assert all(t.info["valid"] for t in ep.turns), [t.info.get("error") for t in ep.turns]


def test_mem1_expert_buys_the_goal_product_with_every_option(goals, mem1_episodes):
    for goal, ep in zip(goals, mem1_episodes):
        assert_bought_within_budget(ep, WebShopConfig().max_turns)
        assert ep.info["reward"] == 1.0 and ep.info["success"] == 1.0, goal.id
        last = ep.turns[-1].info
        assert last["asin"] == goal.asin and sorted(last["options"].values()) == sorted(goal.goal_options)
        # search, open, one click per option, buy; plus a click on next > where the product is on page 2
        assert pages(ep)[0] == "results" and len(ep.turns) <= 4 + len(goal.goal_options)
    assert any(pages(ep)[:2] == ["results", "results"] for ep in mem1_episodes)  # the paging path ran


def test_expert_reads_the_task_after_the_demonstration(goals, mem1_episodes, tokenizer):
    prompt = tokenizer.decode(list(mem1_episodes[0].segments[0].token_ids))
    assert "blue ceramic mug" in prompt  # the few-shot demonstration, with its own instruction, comes first
    for goal, ep in zip(goals, mem1_episodes):
        assert ep.segments[ep.turns[0].generated].text.endswith(f"<answer>search[{goal.instruction}]</answer>")


def test_notes_are_short_and_carry_the_chosen_options(goals, mem1_episodes):
    for goal, ep in zip(goals, mem1_episodes):
        for t in ep.turns:
            start, stop = t.state_span
            assert stop - start <= MAX_NOTES_TOKENS
        buy_notes = ep.segments[ep.turns[-1].generated].text
        assert f"Open: {goal.asin.lower()}." in buy_notes and "Chosen: " + "; ".join(goal.goal_options) in buy_notes


def test_full_context_expert_succeeds(goals, engine, expert, tokenizer):
    (ep,) = play(goals[2:3], engine, expert, tokenizer, policy="full_context")  # goals[2]: its product is on page 2
    assert_bought_within_budget(ep, WebShopConfig().max_turns)
    assert ep.info["reward"] == 1.0 and "results" in pages(ep)[1:]


def test_expert_buys_on_its_last_turn(goals, engine, expert, tokenizer):
    # four turns for search, open, two options and buy: it skips the second option rather than run out
    (ep,) = play(goals[:1], engine, expert, tokenizer, config=WebShopConfig(max_turns=4))
    assert_bought_within_budget(ep, 4)
    assert 0.0 < ep.info["reward"] < 1.0 and len(ep.turns[-1].info["options"]) == 1


def test_expert_falls_back_when_the_search_never_lists_the_product(generated_catalog, expert, tokenizer):
    # A search that returns one product: for most goals it is not the goal's own. The expert
    # searches again with the key words, then opens the listed product that fits best; in
    # this catalog another product of the same kind often scores 1.0 as well.
    narrow = WebShopEngine(generated_catalog, search_return_n=1)
    goals = generated_catalog.split("test")[:8]
    episodes = play(goals, narrow, expert, tokenizer)
    for ep in episodes:
        assert_bought_within_budget(ep, WebShopConfig().max_turns)
        assert ep.info["reward"] >= 0.6
    assert any(pages(ep)[:2] == ["results", "search"] for ep in episodes)  # the second search ran
    assert any(ep.info["reward"] == 1.0 and ep.turns[-1].info["asin"] != g.asin for g, ep in zip(goals, episodes))
