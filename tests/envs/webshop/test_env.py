"""The WebShop text environment on the generated catalog: every page as text with its
valid actions, search[...] and click[...] as WebShop names them, the purchase scored by
reward.py, malformed and invalid actions answered (never raised), and the turn budget."""

from dataclasses import replace

import pytest

from envs.webshop import WebShopConfig, WebShopEnv, score_purchase
from envs.webshop.env import WEBSHOP_DEMONSTRATION
from envs.webshop.site import normalize_target


def turn(action: str, notes: str = "notes") -> str:
    """One model turn in the MEM1 tag protocol."""
    return f"<think>{notes}</think><answer>{action}</answer>"


def actions_of(obs: str) -> list[str]:
    """The "Current available actions" list an observation ends with."""
    line = obs.rsplit("Current available actions: ", 1)[1].removesuffix("</state>")
    return line.split(", ")


@pytest.fixture(scope="module")
def goal(generated_catalog, engine):
    """A goal whose instruction finds its product on results page 1 of several pages, on a
    product with two option groups (so next/prev and option choice are all exercised)."""
    for g in generated_catalog.goals:
        found = engine.search(g.instruction.lower())
        if len(found) > 10 and g.asin in [p.asin for p in found[:10]] and len(g.goal_options) == 2:
            return g
    raise AssertionError("the generated catalog has no goal to test navigation on")


def new_env(engine, **config) -> WebShopEnv:
    return WebShopEnv(engine, WebShopConfig(**config))


def test_reset_shows_the_search_page(engine, goal):
    env = new_env(engine, max_turns=7)
    prompt, info = env.reset(options={"task": goal})
    assert f"Instruction: {goal.instruction}" in prompt
    assert "<state>You have 7 turns left." in prompt and "WebShop [SEP] Instruction: [SEP]" in prompt
    assert actions_of(prompt) == ["search[<keywords>]"]
    assert info["task_id"] == goal.id and info["goal_asin"] == goal.asin and info["max_turns"] == 7
    assert info["demonstration"] == WEBSHOP_DEMONSTRATION
    assert "demonstration" not in new_env(engine, few_shot=False).reset(options={"task": goal})[1]


def test_search_pages_item_tabs_options_buy(engine, generated_catalog, goal):
    """search -> results 1 -> next -> results 2 -> prev -> item -> tabs -> options -> buy; the
    reward is reward.py's score of what was bought."""
    product = generated_catalog.product(goal.asin)
    found = engine.search(goal.instruction.lower())
    env = new_env(engine, max_turns=20)
    env.reset(options={"task": goal})

    obs, reward, terminated, truncated, info = env.step(turn(f"search[{goal.instruction}]"))
    assert (reward, terminated, truncated) == (0.0, False, False)
    assert info["action"] == "search" and info["valid"] and info["page"] == "results"
    assert f"Page 1 (Total results: {len(found)})" in obs and "You have 19 turns left." in obs
    page1 = [p.asin.lower() for p in found[:10]]
    assert actions_of(obs) == ["click[back to search]", "click[next >]"] + [f"click[{a}]" for a in page1]
    for p in found[:10]:
        assert f"{p.asin} [SEP] {p.title} [SEP] {p.price_tag}" in obs
    first_page = obs.split("\n\n", 1)[1]

    obs, *_, info = env.step(turn("click[next >]"))
    page2 = [p.asin.lower() for p in found[10:20]]
    assert "Page 2 (Total results" in obs and info["page"] == "results"
    assert actions_of(obs)[:3] == ["click[back to search]", "click[< prev]", "click[next >]"]
    assert actions_of(obs)[3:] == [f"click[{a}]" for a in page2]

    obs, *_ = env.step(turn("click[&lt; Prev]"))  # HTML entities and case, as models copy them
    assert obs.split("\n\n", 1)[1] == first_page  # the same page 1 (below the turns-left line)

    obs, *_, info = env.step(turn(f"click[{goal.asin}]"))  # the asin as shown (upper case)
    assert info["page"] == "item"
    assert f"[SEP] {product.title} [SEP] Price: {product.price_tag} [SEP] Rating: N.A. [SEP] Description [SEP] Features [SEP] Reviews [SEP] Buy Now" in obs
    values = [v for vs in product.options.values() for v in vs]
    for group, vs in product.options.items():
        assert f"[SEP] {group} [SEP] {' [SEP] '.join(vs)}" in obs
    assert actions_of(obs) == (["click[back to search]", "click[< prev]"] + [f"click[{v}]" for v in values]
                               + ["click[description]", "click[features]", "click[reviews]", "click[buy now]"])
    item_page = obs

    obs, *_, info = env.step(turn("click[description]"))
    assert info["page"] == "description" and product.description in obs
    assert actions_of(obs) == ["click[back to search]", "click[< prev]"]
    obs, *_, info = env.step(turn("click[< prev]"))
    assert info["page"] == "item" and obs.split("\n\n", 1)[1] == item_page.split("\n\n", 1)[1]
    obs, *_, info = env.step(turn("click[features]"))
    assert info["page"] == "features" and all(b in obs for b in product.bullet_points)
    obs, *_, info = env.step(turn("click[reviews]"))
    assert "Invalid action" in obs  # a tab page offers only back to search and < prev
    obs, *_ = env.step(turn("click[< prev]"))

    chosen = {}
    for group in product.options:
        value = next(v for v in goal.goal_options if v in product.options[group])
        obs, *_, info = env.step(turn(f"click[{value.upper()}]"))
        chosen[group] = value
        assert info["action"] == "click" and info["page"] == "item"
        assert "Selected options: " + ", ".join(f"{g}: {v}" for g, v in chosen.items()) in obs

    obs, reward, terminated, truncated, info = env.step(turn("click[buy now]"))
    expected = score_purchase(product, goal, product.price, chosen)
    assert (obs, terminated, truncated) == ("", True, False)
    assert reward == expected.reward == info["reward"] == 1.0 and info["success"] == 1.0
    assert info["action"] == "buy" and info["page"] == "done"
    assert info["asin"] == goal.asin and info["options"] == chosen and info["price"] == product.price
    assert info["turns"] == 12 and info["searches"] == 1 and info["invalid_turns"] == 1
    assert info["score_r_option"] == 1.0 and info["score_r_type"] == 1.0


def test_buying_with_a_wrong_option_scores_what_reward_py_says(engine, generated_catalog, goal):
    product = generated_catalog.product(goal.asin)
    group = next(iter(product.options))
    wrong = next(v for v in product.options[group] if v not in goal.goal_options)
    env = new_env(engine)
    env.reset(options={"task": goal})
    env.step(turn(f"search[{goal.instruction}]"))
    env.step(turn(f"click[{goal.asin.lower()}]"))
    env.step(turn(f"click['{wrong}']"))  # quotes around a target are dropped
    _, reward, terminated, _, info = env.step(turn("click[buy now]"))
    expected = score_purchase(product, goal, product.price, {group: wrong})
    assert terminated and info["options"] == {group: wrong}
    assert reward == pytest.approx(expected.reward) and 0.0 < reward < 1.0 and info["success"] == 0.0


def test_back_to_search_starts_over(engine, goal):
    env = new_env(engine)
    env.reset(options={"task": goal})
    env.step(turn("search[running shoes]"))
    obs, *_, info = env.step(turn("click[back to search]"))
    assert info["page"] == "search" and actions_of(obs) == ["search[<keywords>]"]
    obs, *_, info = env.step(turn("search[the]"))  # stopwords only: a results page with nothing on it
    assert info["valid"] and "Page 1 (Total results: 0)" in obs and actions_of(obs) == ["click[back to search]"]


MALFORMED = [
    "",
    "I would like to buy the shoes.",
    "<answer>search[shoes]</answer>",  # no state
    "<think>notes</think>",  # no action
    "<think>notes</think><answer>search[shoes]",  # unclosed
    "<think>notes</think><answer></answer>",  # empty
    "<think>notes</think><answer>search[a] <answer>click[b]</answer>",  # two actions
    "<think>notes</think><answer>buy the red one</answer>",  # neither search[...] nor click[...]
    "<think>notes</think><answer>search red shoes</answer>",
    "<think>notes</think><answer>click[</answer>",
    "<answer><think>notes</think>search[x]</answer>",  # state inside the action
    "<think>" + "x" * 20_000 + "</think><answer>search[x]</answer>",  # runaway output
    "<think>\x00\ud800 ☃</think><answer>\x00 click</answer>",  # control and odd characters
]


@pytest.mark.parametrize("text", MALFORMED)
def test_malformed_turns_are_answered_not_raised(engine, goal, text):
    env = new_env(engine, max_turns=5, format_penalty=0.1)
    env.reset(options={"task": goal})
    obs, reward, terminated, truncated, info = env.step(text)
    assert (terminated, truncated) == (False, False)
    assert info["action"] == "invalid" and not info["valid"] and info["error"]
    assert f"Invalid action: {info['error']}" in obs and "You are still on the same page." in obs
    assert actions_of(obs) == ["search[<keywords>]"] and info["page"] == "search"
    assert reward == pytest.approx(-0.1)  # the format penalty


@pytest.mark.parametrize(
    "where, action, reason",
    [
        ("search", "click[buy now]", "nothing to click on the search page"),
        ("search", "search[   ]", "the search has no keywords"),
        ("results", "search[shoes]", "there is no search box on the results page; click[back to search] first"),
        ("results", "click[< prev]", "'< prev' is not a clickable element of the results page"),
        ("results", "click[b0nothere00]", "'b0nothere00' is not a clickable element"),
        ("item", "click[next >]", "'next >' is not a clickable element of the item page"),
        ("item", "click[purple polka dots]", "'purple polka dots' is not a clickable element"),
    ],
)
def test_invalid_actions_keep_the_page_and_say_why(engine, goal, where, action, reason):
    env = new_env(engine, max_turns=9, format_penalty=0.5)
    obs, _ = env.reset(options={"task": goal})
    steps = {"search": [], "results": [f"search[{goal.instruction}]"], "item": [f"search[{goal.instruction}]", f"click[{goal.asin}]"]}[where]
    for a in steps:
        obs, *_ = env.step(turn(a))
    before = actions_of(obs)
    obs, reward, terminated, truncated, info = env.step(turn(action))
    assert reward == 0.0 and not terminated and not truncated  # well-formed: no format penalty
    assert info["action"] == "invalid" and not info["valid"] and info["page"] == where
    assert reason in info["error"] and f"Invalid action: {info['error']}" in obs
    assert actions_of(obs) == before


def test_turn_budget_ends_the_episode_without_reward(engine, goal):
    env = new_env(engine, max_turns=3)
    env.reset(options={"task": goal})
    obs, *_ = env.step(turn(f"search[{goal.instruction}]"))
    assert "You have 2 turns left." in obs
    obs, *_ = env.step(turn(f"click[{goal.asin}]"))
    assert "This is your last turn: click[buy now]" in obs
    obs, reward, terminated, truncated, info = env.step(turn("click[description]"))
    assert (obs, reward, terminated, truncated) == ("", 0.0, False, True)
    assert info["reward"] == 0.0 and info["success"] == 0.0 and info["turns"] == 3 and info["searches"] == 1
    assert "asin" not in info  # nothing was bought


def test_buying_on_the_last_turn_counts(engine, goal):
    env = new_env(engine, max_turns=3)
    env.reset(options={"task": goal})
    env.step(turn(f"search[{goal.instruction}]"))
    env.step(turn(f"click[{goal.asin}]"))
    _, reward, terminated, truncated, info = env.step(turn("click[buy now]"))
    assert terminated and not truncated and info["turns"] == 3
    assert 0.0 < reward < 1.0 and reward == info["reward"]  # the product, without its options


def test_malformed_turns_use_up_the_budget(engine, goal):
    env = new_env(engine, max_turns=2, format_penalty=0.25)
    env.reset(options={"task": goal})
    assert env.step("nonsense")[1:4] == (-0.25, False, False)
    obs, reward, terminated, truncated, info = env.step("more nonsense")
    assert (obs, terminated, truncated) == ("", False, True)
    assert reward == pytest.approx(-0.25) and info["reward"] == 0.0 and info["invalid_turns"] == 2


def test_reset_and_step_contract_errors(engine, goal, generated_catalog):
    env = new_env(engine)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(turn("search[x]"))
    with pytest.raises(ValueError, match="options=\\{'task': Goal\\}"):
        env.reset(options={"task": "a goal"})
    with pytest.raises(ValueError, match="lacks"):
        env.reset(options={"task": replace(goal, asin="B0NOTINCAT")})
    with pytest.raises(ValueError, match="env.max_turns=0"):
        WebShopConfig(max_turns=0)
    with pytest.raises(ValueError, match="placeholder \\{state\\}"):
        WebShopConfig(prompt="{instruction} only")


def test_click_targets_normalise_like_the_page():
    assert normalize_target("  Next &gt; ") == "next >"
    assert normalize_target("12 Ounce   (Pack of 2)") == "12 ounce (pack of 2)"
    assert normalize_target('24" Wide') == '24" wide'  # quotes inside an element are kept
