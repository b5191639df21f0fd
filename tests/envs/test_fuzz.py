"""10^4 fuzzed model outputs (random, truncated, nested and repeated tags, tag variants, huge
strings, control characters, invalid UTF-8 decoded with replacement, junk WebShop commands)
through the protocol parser and every env's step, against the real servers: no exception,
and every result is one the rollout loop can use (tests/envs/fuzzing.py checks it).

Seeded (derandomize=True), so a failure reproduces; the examples add up to 10,000."""

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from envs.data import generate_world
from envs.protocol import STATE_TAG, cut_after_action, parse_turn
from tests.envs.fuzzing import (
    FUZZ_EXAMPLES, check_parsed, fuzz_settings, parser_inputs, play, qa_target, soup, toy_target, webqa_target, webshop_target,
)


@pytest.fixture(scope="module")
def world():
    return generate_world(0, "small")


@pytest.fixture(scope="module")
def qa(world, tmp_path_factory):
    with qa_target(world, tmp_path_factory.mktemp("fuzz-world")) as target:
        yield target


@pytest.fixture(scope="module", params=["searxng", "serper"])
def webqa(world, request):
    with webqa_target(world, request.param) as target:
        yield target


@pytest.fixture(scope="module")
def toy():
    return toy_target()


@pytest.fixture(scope="module")
def webshop():
    return webshop_target()


@fuzz_settings(FUZZ_EXAMPLES["parser"])
@given(parser_inputs())
def test_parser_is_consistent_on_any_output(inputs):
    text, actions, require_state = inputs
    assert text.startswith(cut_after_action(text, actions))
    check_parsed(text, actions, require_state)


@fuzz_settings(FUZZ_EXAMPLES["qa"])
@given(data=st.data())
def test_qa_env_over_the_http_retriever(qa, data):
    play(qa, data.draw)


@fuzz_settings(FUZZ_EXAMPLES["webqa"])
@given(data=st.data())
def test_webqa_env_over_the_local_search_server(webqa, data):
    play(webqa, data.draw)


@fuzz_settings(FUZZ_EXAMPLES["webshop"])
@given(data=st.data())
def test_webshop_env(webshop, data):
    play(webshop, data.draw)


@fuzz_settings(FUZZ_EXAMPLES["toy"])
@given(data=st.data())
def test_toy_env(toy, data):
    play(toy, data.draw)


# ---------------------------------------------------------------- regressions found by fuzzing


@pytest.mark.timeout(10)
def test_runaway_repeated_state_tags_parse_in_linear_time():
    """The state was found by a lazy regex that rescanned the rest of the text from every
    <think>: 14,000 unclosed tags (98,000 characters) took 10 s. Now two finds."""
    runaway = "<think>" * 14_000
    for _ in range(20):  # 200 s before the fix, milliseconds after
        p = parse_turn(runaway)
        assert p.state is None and "too long" in p.error
    closed = parse_turn(runaway + "</think><search>q</search>")
    assert closed.state_span == (0, len(runaway) + len("</think>")) and "too long" in closed.error


@fuzz_settings(300)
@given(text=soup)
def test_state_is_the_first_complete_think_block(text):
    """The same block the lazy regex <think>(.*?)</think> finds."""
    text = re.sub(r"[\ud800-\udfff]", "\ufffd", text)  # as the parser does
    m = re.search(rf"<{STATE_TAG}>(.*?)</{STATE_TAG}>", cut_after_action(text), re.DOTALL)
    p = parse_turn(text, require_state=False, max_text_chars=10**6)
    assert p.state_span == (m.span() if m else None)
    assert p.state == (m.group(1).strip() if m else None)


def test_lone_surrogates_are_searched_as_replacement_characters(qa, webqa):
    """A query with lone surrogates (half an emoji) made requests raise UnicodeEncodeError
    while encoding the SearXNG URL, out of QAEnv.step. The parser now puts U+FFFD in their place."""
    text = "<think>\ud83d notes</think><search>\udc80 Misfend \ud83d</search>"
    assert parse_turn(text).argument == "\ufffd Misfend \ufffd"
    for target in (qa, webqa):
        target.env.reset(options={"task": target.tasks[0]})
        obs, reward, terminated, truncated, info = target.env.step(text)
        assert info["valid"] and info["action"] == "search" and "search_error" not in info, info
        assert obs.startswith("<information>") and not (terminated or truncated)
