"""Memory policies over random episodes built the way experiments/rollout.py builds them
(context chosen before the turn, then the generated segment, then the observation unless
the episode ended): what each policy puts in the context of turn t, and how
`make_memory_policy` parses specs and rejects bad ones.

Segment indices of a rollout episode: 0 the prompt, then per turn t (0-based) its generated
segment G(t) and, except after the last turn, its observation O(t).
"""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.memory import FullContext, Mem1, MemoryPolicy, Window, make_memory_policy
from policies.records import GENERATED, OBSERVATION, PROMPT, Episode, Segment, SegmentRef, Turn, turn_tokens


@st.composite
def episode_shapes(draw, max_turns: int = 7):
    """Segment lengths and state spans of a random episode: (prompt_len, [(gen_len, obs_len,
    (state_start, state_stop)), ...]); the last turn's observation is never added."""
    prompt_len = draw(st.integers(1, 40))
    turns = []
    for _ in range(draw(st.integers(1, max_turns))):
        gen_len = draw(st.integers(1, 30))
        start = draw(st.integers(0, gen_len))
        stop = draw(st.integers(start, gen_len))
        turns.append((gen_len, draw(st.integers(1, 25)), (start, stop)))
    return prompt_len, turns


def play(policy: MemoryPolicy, shape) -> tuple[Episode, list[tuple[int, int | None]]]:
    """Play an episode of the given shape under `policy`, as the rollout loop does. Token ids
    are unique per position in the episode so that any mix-up of segments shows. Returns the
    episode and, per turn, (generated index, observation index)."""
    prompt_len, turns = shape
    counter = iter(range(1, 10**6))
    ep = Episode.start("task", tuple(next(counter) for _ in range(prompt_len)), "prompt")
    layout = []
    for t, (gen_len, obs_len, span) in enumerate(turns):
        context = policy.context(ep)
        ep, g = ep.add_segment(Segment(GENERATED, tuple(next(counter) for _ in range(gen_len))))
        o = None
        if t < len(turns) - 1:
            ep, o = ep.add_segment(Segment(OBSERVATION, tuple(next(counter) for _ in range(obs_len))))
        ep = ep.add_turn(Turn(context=context, generated=g, logp=(0.0,) * gen_len, finish_reason="stop", observation=o, state_span=span))
        layout.append((g, o))
    return ep, layout


def whole_segments(refs: tuple[SegmentRef, ...], ep: Episode) -> list[int]:
    """The segments referenced, checking that each reference covers its whole segment."""
    for r in refs:
        assert r.bounds(ep.segments) == (0, len(ep.segments[r.segment]))
    return [r.segment for r in refs]


def expected_last_turns(layout, t: int, k: int | None) -> list[int]:
    first = 0 if k is None else max(0, t - k)
    out = [0]
    for g, o in layout[first:t]:
        out += [g] + ([o] if o is not None else [])
    return out


@settings(max_examples=60, deadline=None)
@given(shape=episode_shapes())
def test_mem1_context_holds_only_prompt_and_previous_turn(shape):
    ep, layout = play(Mem1(), shape)
    for t, turn in enumerate(ep.turns):
        segments = whole_segments(turn.context, ep)
        assert segments == ([0] if t == 0 else [0, layout[t - 1][0], layout[t - 1][1]])
        assert ep.segments[segments[0]].kind == PROMPT
        # Nothing from turn t-2 or older: every generated/observation segment is turn t-1's.
        older = {i for g_o in layout[: max(0, t - 1)] for i in g_o if i is not None}
        assert older.isdisjoint(segments)
    # The final context the next turn would see (after the last turn, which has no observation).
    assert whole_segments(Mem1().context(ep), ep) == [0, layout[-1][0]]


@settings(max_examples=60, deadline=None)
@given(shape=episode_shapes())
def test_full_context_holds_every_earlier_segment_and_grows(shape):
    ep, layout = play(FullContext(), shape)
    sizes = []
    for t, turn in enumerate(ep.turns):
        assert whole_segments(turn.context, ep) == expected_last_turns(layout, t, None)
        # every segment recorded before turn t's generation, in order, each exactly once
        assert whole_segments(turn.context, ep) == list(range(turn.generated))
        sizes.append(len(ep.context_ids(turn.context)))
    assert all(b > a for a, b in zip(sizes, sizes[1:]))
    assert [c.context for c in turn_tokens(ep)] == sizes


@settings(max_examples=60, deadline=None)
@given(shape=episode_shapes(), k=st.integers(1, 5))
def test_window_holds_exactly_the_last_k_turns(shape, k):
    policy = make_memory_policy(f"window(k={k})")
    ep, layout = play(policy, shape)
    for t, turn in enumerate(ep.turns):
        segments = whole_segments(turn.context, ep)
        assert segments == expected_last_turns(layout, t, k)
        assert sum(ep.segments[i].kind == GENERATED for i in segments) == min(t, k)


@settings(max_examples=80, deadline=None)
@given(shape=episode_shapes(), budget=st.integers(1, 20), spec=st.sampled_from(["mem1", "full_context", "window(k=2)"]))
def test_budget_caps_the_state_and_keeps_the_action(shape, budget, spec):
    capped = make_memory_policy(f"{spec},budget={budget}")
    uncapped = make_memory_policy(spec)
    ep, layout = play(capped, shape)
    for turn in ep.turns:
        # the same segments, in the same order, as without a budget; only generated ones shrink
        prefix = Episode(ep.task_id, ep.segments, ep.turns[: ep.turns.index(turn)])
        by_segment: dict[int, list[tuple[int, int]]] = {}
        for r in turn.context:
            by_segment.setdefault(r.segment, []).append(r.bounds(ep.segments))
        assert list(by_segment) == [r.segment for r in uncapped.context(prefix)]
        for seg, bounds in by_segment.items():
            segment = ep.segments[seg]
            if segment.kind != GENERATED:
                assert bounds == [(0, len(segment))]
                continue
            source = next(t for t in ep.turns if t.generated == seg)
            start, stop = source.state_span
            kept = [i for a, b in bounds for i in range(a, b)]
            state_kept = [i for i in kept if start <= i < stop]
            assert len(state_kept) == min(stop - start, budget)
            assert state_kept == list(range(start, start + len(state_kept)))  # the state's first B tokens
            assert set(range(stop, len(segment))) <= set(kept)  # the action part is kept whole
            assert set(range(0, start)) <= set(kept)  # text before the state too
            assert kept == sorted(kept)  # in the order it was generated


def test_budget_is_a_no_op_when_the_state_fits():
    shape = (5, [(10, 4, (0, 6)), (10, 4, (2, 8)), (10, 4, (0, 0))])
    ep_capped, _ = play(make_memory_policy("mem1,budget=6"), shape)
    ep_free, _ = play(make_memory_policy("mem1"), shape)
    assert [t.context for t in ep_capped.turns] == [t.context for t in ep_free.turns]
    ep_tight, _ = play(make_memory_policy("mem1,budget=2"), shape)
    # turn 1 reuses G(0) with state (0, 6): 2 state tokens + 4 action tokens instead of 10
    assert sum(r.length(ep_tight.segments) for r in ep_tight.turns[1].context) == 5 + 6 + 4


@pytest.mark.parametrize(
    "spec, cls, attrs",
    [
        ("mem1", Mem1, {"budget": None}),
        ("full_context", FullContext, {"budget": None}),
        ("window(3)", Window, {"k": 3, "budget": None}),
        ("window(k=2)", Window, {"k": 2, "budget": None}),
        (" window( k = 4 ) ", Window, {"k": 4}),
        ("mem1,budget=64", Mem1, {"budget": 64}),
        ("mem1, budget=64", Mem1, {"budget": 64}),
        ("window(k=2),budget=16", Window, {"k": 2, "budget": 16}),
        ({"name": "window", "k": 2}, Window, {"k": 2}),
        ({"name": "mem1", "budget": 32}, Mem1, {"budget": 32}),
    ],
)
def test_make_memory_policy_parses(spec, cls, attrs):
    policy = make_memory_policy(spec)
    assert type(policy) is cls
    for name, value in attrs.items():
        assert getattr(policy, name) == value
    again = make_memory_policy(policy.spec)  # the spec logged to MLflow parses back to the same policy
    assert type(again) is cls and again.spec == policy.spec
    assert make_memory_policy(policy) is policy


@pytest.mark.parametrize("spec", ["mem2", "window_k(2)", {"name": "summaryy"}, "fullcontext,budget=3"])
def test_unknown_policy_names_the_allowed_ones(spec):
    with pytest.raises(ValueError) as e:
        make_memory_policy(spec)
    message = str(e.value)
    assert "unknown memory policy" in message
    for name in ("mem1", "full_context", "window"):
        assert name in message


@pytest.mark.parametrize(
    "spec, words",
    [
        ("window(0)", ["k=0", "at least 1"]),
        ("mem1,budget=0", ["budget=0", "positive"]),
        ({"k": 2}, ["no 'name'", "mem1", "full_context", "window"]),
        ("window(k=2", ["cannot parse", "window(k=2)"]),
        ("Mem1", ["cannot parse", "mem1"]),
    ],
)
def test_bad_values_are_named(spec, words):
    with pytest.raises(ValueError) as e:
        make_memory_policy(spec)
    for w in words:
        assert w in str(e.value)


@pytest.mark.parametrize(
    "spec, allowed",
    [
        ("window(j=2)", ["k", "budget"]),
        ("mem1(3)", ["budget"]),
        ("full_context,size=3", ["budget"]),
        ("window(k=two)", ["k", "budget"]),
        ({"name": "mem1", "window": 2}, ["budget"]),
    ],
)
def test_bad_arguments_name_the_allowed_arguments(spec, allowed):
    """A wrong argument is rejected with the policy's name, the argument, and the arguments
    the policy does take (the fix), not only Python's TypeError text."""
    with pytest.raises(ValueError) as e:
        make_memory_policy(spec)
    message = str(e.value)
    name = spec["name"] if isinstance(spec, dict) else spec.split("(")[0].split(",")[0]
    assert "bad arguments" in message and repr(name) in message
    assert "allowed" in message
    tail = message.split("allowed", 1)[1]
    for arg in allowed:
        assert arg in tail
