"""The tag protocol: valid turns parse; every kind of malformed output gets a clear error
and never an exception."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from envs.protocol import cut_after_action, parse_turn


def test_valid_search_and_answer():
    p = parse_turn("<think>Need the capital.</think>\n<search> capital of Vorland </search>")
    assert p.valid and p.action == "search" and p.argument == "capital of Vorland"
    assert p.state == "Need the capital." and p.state_span == (0, len("<think>Need the capital.</think>"))
    p = parse_turn("<think>a=1</think><answer>Paris; 1999</answer>")
    assert p.valid and p.action == "answer" and p.argument == "Paris; 1999"


def test_text_after_first_closing_action_is_cut():
    assert cut_after_action("<search>a</search> junk <answer>b</answer>") == "<search>a</search>"
    p = parse_turn("<think>x</think><search>a</search><search>b</search>")
    assert p.valid and p.argument == "a"


@pytest.mark.parametrize(
    "text, words",
    [
        ("I think the answer is Paris.", "no action"),
        ("<think>x</think><search>capital of", "not closed"),
        ("<think>x</think><search>a <answer>b</answer>", "several actions"),
        ("<think>x</think><search>   </search>", "empty"),
        ("<search>q</search>", "summary"),  # no state
        ("<search>q</search><think>late</think>", "summary"),  # state after the action is cut away
        ("<think>x</think></search>", "do not match"),
        ("<think>x</think><search><think>y</think></search>", "before the action"),
        ("<think>" + "x" * 20000 + "</think><search>q</search>", "too long"),
        ("<think>x</think><search>" + "q" * 2000 + "</search>", "too long"),
    ],
)
def test_malformed_outputs_get_clear_errors(text, words):
    p = parse_turn(text)
    assert not p.valid and words in p.error


def test_state_optional_when_not_required():
    assert parse_turn("<search>q</search>", require_state=False).valid


def test_webshop_style_action_tag():
    p = parse_turn("<think>s</think><answer>click[buy now]</answer>", actions=("answer",))
    assert p.valid and p.argument == "click[buy now]"


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("<>/thinkserachawd []x\n")), max_size=200))
def test_never_raises_on_any_text(text):
    p = parse_turn(text)
    assert p.valid == (p.error is None)
