"""Adversarial model outputs (hypothesis strategies), the envs they are played against, and
the check that every step's result is one the rollout loop can use.

    @given(st.data())
    def test(data): play(target, data.draw)     # one episode of fuzzed turns, checked

Shared by tests/envs/test_fuzz.py and experiments/bench/reliability.py (which counts the
failures instead of raising), so both fuzz the same way. The targets run the real stack:
the QA env over the Search-R1 HTTP server on 127.0.0.1, web QA over the local search
server (SearXNG and Serper wire formats), WebShop over the generated catalog, and the toy
env.
"""

from __future__ import annotations

import contextlib
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from envs import QAConfig, QAEnv
from envs.base import TextEnv
from envs.protocol import MAX_ARGUMENT_CHARS, QA_ACTIONS, STATE_TAG, parse_turn
from envs.tasks import compose_tasks


# Examples per fuzz test, 10,000 in all (webqa: per wire format); the bench's defaults too.
FUZZ_EXAMPLES = {"parser": 5000, "qa": 1500, "webqa": 500, "webshop": 1500, "toy": 1000}


def fuzz_settings(max_examples: int) -> settings:
    """Seeded (a failure reproduces), no deadline (a step may send a request), no example
    database written into the checkout."""
    return settings(
        max_examples=max_examples, deadline=None, derandomize=True, database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
    )


# --------------------------------------------------------------------------- outputs

TAG_NAMES = ("think", "search", "answer", "information", "state")
EXACT_TAGS = [f"<{n}>" for n in TAG_NAMES] + [f"</{n}>" for n in TAG_NAMES]
# What a model writes when it almost follows the protocol: case, spaces, attributes,
# self-closing and doubled brackets, half a tag.
TAG_VARIANTS = [
    v
    for n in TAG_NAMES
    for v in (f"<{n.upper()}>", f"</{n.capitalize()}>", f"< {n} >", f"<{n} >", f"</ {n}>", f"<{n}/>", f'<{n} id="1">',
              f"<<{n}>>", f"<{n}", f"{n}>", f"</{n}", f"&lt;{n}&gt;", f"<\n{n}>")
]
# Control and format characters, and lone surrogates (half an emoji from a JSON trace, a
# surrogateescape'd byte), which no wire can encode as UTF-8.
CONTROL = ["\x00", "\x07", "\x08", "\x1b[2J", "\r", "\r\n", "\t", "\x0b", "\x0c", "\x7f", "\x85", "\u2028", "\u2029",
           "\u200b", "\u202e", "\ufeff", "\ufffd", "\U0001f600", "\u0301", "\ud83d", "\udc80", "\udfff"]
# Byte sequences that are not UTF-8 (stray continuation bytes, truncated and overlong
# forms, encoded surrogates, code points above U+10FFFF), as a sampler decoding a cut token sees them.
BAD_BYTES = [b"\xff", b"\xfe\xff", b"\x80", b"\xbf\x80", b"\xc3", b"\xc3\x28", b"\xe2\x82", b"\xe2\x28\xa1", b"\xf0\x9f\x98",
             b"\xc0\xaf", b"\xe0\x80\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xf8\x88\x80\x80\x80"]
HUGE_UNITS = ["a", " ", "<think>", "</think>", "<search>", "</answer>", "<think>x</think>", "[", "search[", "click[", "; ",
              "\ufffd", "é", "\x00", "<"]
WEBSHOP_NAV = ["back to search", "next >", "< prev", "buy now", "description", "features", "reviews", "attributes"]

short_text = st.text(max_size=24)
ascii_text = st.text(st.characters(codec="ascii"), max_size=24)
controls = st.sampled_from(CONTROL)
tags = st.one_of(st.sampled_from(EXACT_TAGS), st.sampled_from(TAG_VARIANTS))
invalid_utf8 = st.one_of(
    st.binary(max_size=40),
    st.lists(st.one_of(st.sampled_from(BAD_BYTES), st.binary(max_size=4)), max_size=8).map(b"".join),
).map(lambda b: b.decode("utf-8", errors="replace"))
huge = st.builds(lambda unit, n: (unit * (n // len(unit) + 1))[:n], st.sampled_from(HUGE_UNITS), st.integers(2_000, 100_000))
webshop_commands = st.builds(
    lambda verb, open_, arg, close: f"{verb}{open_}{arg}{close}",
    st.sampled_from(["search", "click", "SEARCH", "Click", " click ", "clik", "buy", ""]),
    st.sampled_from(["[", " [", "[[", "(", ""]),
    st.one_of(short_text, st.sampled_from(WEBSHOP_NAV), st.sampled_from(["", " ", "]", "[x]", "&gt;", "'", '"'])),
    st.sampled_from(["]", "", "]]", "] extra", ")", "]\n"]),
)
pieces = st.one_of(tags, short_text, ascii_text, controls, invalid_utf8, webshop_commands)
soup = st.lists(pieces, max_size=8).map("".join)  # tags and junk in any order


def _turn(state: str, action: str, argument: str) -> str:
    return f"<{STATE_TAG}>{state}</{STATE_TAG}><{action}>{argument}</{action}>"


def _truncated(texts: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """A prefix of a text: generation cut at any character (max tokens, a stop mid-tag)."""
    return st.builds(lambda text, f: text[: int(len(text) * f)], texts, st.floats(0.0, 1.0))


def model_outputs(actions: Sequence[str] = QA_ACTIONS, arguments: st.SearchStrategy[str] | None = None) -> st.SearchStrategy[str]:
    """Anything a model could write in one turn, from well-formed to hostile."""
    arguments = arguments if arguments is not None else st.one_of(soup, short_text)
    well_formed = st.builds(_turn, st.one_of(soup, short_text), st.sampled_from(list(actions)), arguments)
    nested = st.builds(  # every opening and closing tag exactly once, in any order
        lambda order, fills: "".join(t + f for t, f in zip(order, fills)),
        st.permutations([f"<{STATE_TAG}>", f"</{STATE_TAG}>", *(f"<{a}>" for a in actions), *(f"</{a}>" for a in actions)]),
        st.lists(ascii_text, min_size=2 + 2 * len(actions), max_size=2 + 2 * len(actions)),
    )
    repeated = st.builds(lambda text, k: text * k, st.one_of(well_formed, tags), st.integers(2, 60))
    return st.one_of(
        st.text(max_size=120),
        soup,
        well_formed,
        nested,
        repeated,
        _truncated(st.one_of(well_formed, soup)),
        st.builds(lambda a, b, c: a + b + c, st.one_of(well_formed, st.just("")), huge, st.one_of(well_formed, st.just(""))),
        st.builds(lambda text, bad: text.replace("a", bad, 3), well_formed, st.one_of(invalid_utf8, controls)),
    )


def qa_outputs() -> st.SearchStrategy[str]:
    """QA turns: a well-formed search (with any query) or answer (any number of parts) in
    half of them, so the retriever is hit and episodes reach their end; any output otherwise."""
    search = st.builds(_turn, ascii_text, st.just("search"), st.one_of(short_text, ascii_text, invalid_utf8, soup))
    parts = st.lists(st.one_of(short_text, ascii_text, st.just("")), max_size=6).map("; ".join)
    answer = st.builds(_turn, ascii_text, st.just("answer"), parts)
    return _weighted([search] * 3 + [answer] + [model_outputs()] * 4)


@st.composite
def _weighted(draw, choices: list[st.SearchStrategy[str]]) -> str:
    """A draw from one of `choices`, each as often as it is listed (st.one_of flattens
    nested alternatives into equal shares, so repeating a branch there weighs nothing)."""
    return draw(draw(st.sampled_from(choices)))


# How a model garbles an action it copies from the page: case, spacing, quotes, entities,
# doubled or cut short.
ACTION_VARIANTS = [
    str.upper, str.title, lambda a: f"  {a}\n", lambda a: a.replace("[", "['", 1).replace("]", "']"),
    lambda a: a.replace("[", " [ ").replace("]", " ] "), lambda a: a.replace(">", "&gt;").replace("<", "&lt;"),
    lambda a: a + a, lambda a: a[:-1],
]
# Half the turns are a clean copy of an offered action, so episodes get past the search page
# to results, items, tabs and purchases; the rest garble it, bury it in junk, or are junk.
WEBSHOP_TURN_KINDS = ["clean"] * 5 + ["varied"] * 2 + ["buried", "junk_command", "anything"]


def webshop_outputs(keywords: Sequence[str]) -> Callable[[Sequence[str]], st.SearchStrategy[str]]:
    """page actions -> the strategy for a WebShop turn on that page. Every sub-strategy is
    built once here: building and validating new ones for every page costs more than the env."""
    words = st.lists(st.sampled_from(sorted(set(keywords))), min_size=1, max_size=6).map(" ".join)
    kinds, variants = st.sampled_from(WEBSHOP_TURN_KINDS), st.sampled_from(ACTION_VARIANTS)
    junk_turn = st.builds(_turn, soup, st.just("answer"), st.one_of(webshop_commands, soup))
    anything = model_outputs(("answer",))

    @st.composite
    def turn(draw, actions: tuple[str, ...]) -> str:
        action = actions[draw(st.integers(0, len(actions) - 1))]
        if "<keywords>" in action:
            action = action.replace("<keywords>", draw(words))
        kind = draw(kinds)
        if kind == "clean":
            return _turn(draw(ascii_text), "answer", action)
        if kind == "varied":
            return _turn(draw(ascii_text), "answer", draw(variants)(action))
        if kind == "buried":  # the action somewhere inside hostile text
            text = draw(anything)
            at = draw(st.integers(0, len(text)))
            return text[:at] + action + text[at:]
        return draw(junk_turn if kind == "junk_command" else anything)

    return lambda actions: turn(tuple(actions))


def parser_inputs() -> st.SearchStrategy[tuple[str, tuple[str, ...], bool]]:
    """(text, action tags, require_state) for parse_turn: QA's and WebShop's protocols."""
    return st.tuples(st.one_of(model_outputs(), model_outputs(("answer",))), st.sampled_from([QA_ACTIONS, ("answer",)]), st.booleans())


# --------------------------------------------------------------------------- checks

OBSERVATION_MAX_CHARS = 20_000  # an observation never echoes a runaway output back
ACTION_KINDS = {"search", "answer", "click", "buy", "invalid"}


class EnvStepError(Exception):
    """env.step raised: the bug fuzzing looks for (not a malformed result)."""


def check_parsed(text: str, actions: Sequence[str], require_state: bool) -> None:
    """parse_turn on `text` is consistent: valid iff no error, a valid action has a bounded
    non-empty argument, and the state span points at a <think> block of the text."""
    p = parse_turn(text, tuple(actions), require_state=require_state)
    assert p.valid == (p.error is None)
    assert p.error is None or (isinstance(p.error, str) and 0 < len(p.error) < 400), p.error
    if p.valid:
        assert p.action in actions and p.argument == p.argument.strip()
        assert 0 < len(p.argument) <= MAX_ARGUMENT_CHARS
        assert re.search(rf"<{p.action}>", text)
        if require_state:
            assert p.state is not None and p.state_span is not None
    check_state_span(text, p.state_span, p.state)


def check_state_span(text: str, span: Any, state: str | None = None) -> None:
    if span is None:
        return
    start, end = span
    assert isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= len(text), span
    block = text[start:end]
    assert block.startswith(f"<{STATE_TAG}>") and block.endswith(f"</{STATE_TAG}>"), block[:80]
    if state is not None:  # the parser puts U+FFFD in place of a lone surrogate
        inside = re.sub(r"[\ud800-\udfff]", "\ufffd", block[len(STATE_TAG) + 2 : -(len(STATE_TAG) + 3)])
        assert state == inside.strip()


def check_step(text: str, result: Any, final_keys: Sequence[str]) -> bool:
    """Assert that one step's result is well formed for the rollout loop; returns `done`."""
    assert isinstance(result, tuple) and len(result) == 5, type(result)
    obs, reward, terminated, truncated, info = result
    assert isinstance(obs, str), type(obs)
    assert isinstance(reward, (int, float)) and not isinstance(reward, bool) and math.isfinite(reward), reward
    assert isinstance(terminated, bool) and isinstance(truncated, bool) and not (terminated and truncated)
    assert isinstance(info, dict) and {"action", "valid", "state_span"} <= set(info), sorted(info)
    assert info["action"] in ACTION_KINDS and isinstance(info["valid"], bool), (info["action"], info["valid"])
    check_state_span(text, info["state_span"])
    if not info["valid"]:
        assert isinstance(info.get("error"), str) and info["error"], info
    # The servers are up and every query the parser lets through is within their limits.
    assert "search_error" not in info, info["search_error"]
    done = terminated or truncated
    if done:
        missing = [k for k in final_keys if k not in info]
        assert not missing, f"the last step's info lacks {missing}"
        assert all(math.isfinite(v) for k in final_keys for v in _numbers(info[k])), {k: info[k] for k in final_keys}
    else:
        assert 0 < len(obs) <= OBSERVATION_MAX_CHARS, len(obs)
    return done


def _numbers(value: Any) -> list[float]:
    values = value if isinstance(value, (list, tuple)) else [value]
    return [float(v) for v in values if isinstance(v, (int, float))]


# --------------------------------------------------------------------------- targets


@dataclass
class FuzzTarget:
    """An env to fuzz, the tasks to reset it with, and what its turns are drawn from."""

    name: str
    env: TextEnv
    tasks: Sequence[Any]
    final_keys: tuple[str, ...]
    outputs: Callable[[TextEnv], st.SearchStrategy[str]]  # the strategy for the env's next turn
    max_turns: int = 5  # turns per fuzzed episode (fewer when the env ends it)


def play(target: FuzzTarget, draw: Callable[[st.SearchStrategy[Any]], Any]) -> int:
    """One episode of fuzzed turns, each result checked; returns the number of steps.
    `EnvStepError` if the env raised, `AssertionError` if a result was malformed."""
    task = draw(st.sampled_from(list(target.tasks)))
    target.env.reset(options={"task": task})
    steps = 0
    for _ in range(target.max_turns):
        text = draw(target.outputs(target.env))
        try:
            result = target.env.step(text)
        except Exception as e:
            raise EnvStepError(f"{target.name}: step raised {type(e).__name__}: {e} on {text[:300]!r}") from e
        steps += 1
        if check_step(text, result, target.final_keys):
            break
    return steps


QA_FINAL_KEYS = ("em", "f1", "em_mean", "f1_mean", "turns", "searches", "invalid_turns")
# Short episodes: two malformed turns in a row end one, so truncation is reached too.
FUZZ_QA_CONFIG = QAConfig(few_shot=False, max_invalid_streak=2, state_credit=0.5)


def qa_tasks(world, count: int = 6) -> list:
    return [t for n in (1, 2, 3) for t in compose_tasks(world.items, n, count // 3, seed=n, prefix="fuzz-")]


@contextlib.contextmanager
def qa_target(world, folder: str | Path) -> Iterator[FuzzTarget]:
    """QAEnv over the Search-R1 server (a subprocess on 127.0.0.1) with the world's BM25 index."""
    from envs.retrieval import HttpRetriever, start_server_process

    files = world.write(folder)
    with start_server_process(files.corpus, "bm25", port=0, timeout=120) as server:
        with contextlib.closing(HttpRetriever(server.url, timeout=10, retries=1, backoff=0.01)) as retriever:
            outputs = qa_outputs()
            yield FuzzTarget("qa", QAEnv(retriever, FUZZ_QA_CONFIG), qa_tasks(world), QA_FINAL_KEYS, lambda env: outputs)


@contextlib.contextmanager
def webqa_target(world, provider: str) -> Iterator[FuzzTarget]:
    """QAEnv over the local web-search server (in-process uvicorn on 127.0.0.1) through the
    `provider` wire format ("searxng" or "serper"); no rate limit or cache, so every search is
    a request."""
    from envs.retrieval.bm25 import BM25Index
    from envs.webqa import make_web_retriever, start_local_search_server

    with start_local_search_server(documents=world.documents, index=BM25Index.build(world.documents)) as server:
        with contextlib.closing(make_web_retriever(provider, server.url, rate_limit_per_s=None, retries=1, backoff_s=0.01)) as retriever:
            outputs = qa_outputs()
            yield FuzzTarget(f"webqa-{provider}", QAEnv(retriever, FUZZ_QA_CONFIG), qa_tasks(world), QA_FINAL_KEYS, lambda env: outputs)


def webshop_target(num_products: int = 400) -> FuzzTarget:
    """WebShopEnv over the generated catalog; turns are drawn from the page's own actions
    (so episodes reach results, item and tab pages and purchases) as well as from junk."""
    from envs.webshop import WebShopConfig, WebShopEngine, WebShopEnv, generate_catalog

    catalog = generate_catalog(seed=0, num_products=num_products)
    engine = WebShopEngine(catalog)
    goals = list(catalog.goals[:12])
    keywords = sorted({w for g in goals for w in g.instruction.split()})
    env = WebShopEnv(engine, WebShopConfig(max_turns=6, few_shot=False, format_penalty=0.1, show_attributes=True))
    turns = webshop_outputs(keywords)

    def outputs(env: WebShopEnv) -> st.SearchStrategy[str]:
        return turns(env.browser.page.actions or ["click[buy now]"])

    return FuzzTarget("webshop", env, goals, ("reward", "success", "turns", "invalid_turns", "searches"), outputs, max_turns=6)


def toy_target() -> FuzzTarget:
    from envs.toy import CharFractionEnv, toy_tasks

    outputs = model_outputs()
    return FuzzTarget("toy", CharFractionEnv(), toy_tasks(4, "aeiou"), ("reward", "success"), lambda env: outputs, max_turns=1)
