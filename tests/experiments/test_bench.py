"""Smoke tests of the benchmarks in experiments/bench (their numbers are never checked here:
machines differ). The learner benchmark: its core on a very small setting (structure, and its
built-in check that packed and per-turn replay agree) and its command line into a result
JSON. The memory-scaling benchmark: its summary of episode records and its config."""

import json

import pytest
import torch

from experiments.bench.learner import EpisodeShape, benchmark_episode, main, run
from policies.models import build_char_tokenizer, build_tiny_model

SHAPE = EpisodeShape(prompt=24, generated=6, observation=10, jitter=0.25)
PATH_KEYS = {"rows", "tokens", "padded_tokens", "loss_tokens", "attention_entries", "wall_s", "forward_s", "cpu_s",
             "walls_s", "prep_s", "loss_tokens_per_s", "processed_tokens_per_s"}


@pytest.fixture(scope="module")
def char_model():
    tokenizer = build_char_tokenizer()
    return build_tiny_model(tokenizer, seed=0), len(tokenizer)


def test_learner_core_structure_and_replay_agreement(char_model):
    model, vocab = char_model
    result = run(model, vocab, turns=(2, 4), policies=("mem1",), shape=SHAPE, repeats=1, warmup=0,
                 log=lambda _: None)
    assert set(result["per_policy"]) == {"mem1"}
    for policy, by_turns in result["per_policy"].items():
        assert set(by_turns) == {"2", "4"}
        for n, r in by_turns.items():
            assert r["turns"] == int(n)
            assert PATH_KEYS <= set(r["packed"]) and PATH_KEYS <= set(r["per_turn"])
            assert r["packed"]["rows"] == 1 and r["per_turn"]["rows"] == int(n)  # one row per turn
            assert r["packed"]["loss_tokens"] == r["per_turn"]["loss_tokens"] > 0
            assert len(r["packed"]["walls_s"]) == 1 and r["packed"]["wall_s"] > 0 and r["per_turn"]["wall_s"] > 0
            # the prompt is repeated every turn in per-turn replay, laid out once when packed
            assert r["per_turn"]["tokens"] > r["packed"]["tokens"]
            assert r["speedup"] == pytest.approx(r["per_turn"]["wall_s"] / r["packed"]["wall_s"], rel=1e-2)
            # the correctness check inside the benchmark: same log-probs and gradients both ways
            assert r["check"]["logp_max_abs_diff"] <= 1e-4
            assert r["check"]["grad_max_abs_diff"] <= 1e-4 * r["check"]["grad_max_abs"]
    head = result["headline"]
    assert head["meets_target"] is None and head["speedup_at_target"] is None  # no 8-turn run here
    assert head["logp_max_abs_diff"] <= 1e-4
    assert set(head["mem1"]["speedup_by_turns"]) == {"2", "4"}


def test_layout_figures_are_the_packers(char_model):
    """Full context lays out each segment once, so packed tokens = the episode's tokens; both
    paths score exactly the generated tokens."""
    model, vocab = char_model
    ep = benchmark_episode("full_context", 3, SHAPE, vocab, seed=5)
    r = run(model, vocab, turns=(3,), policies=("full_context",), shape=SHAPE, repeats=1, warmup=0, seed=5,
            log=lambda _: None)["per_policy"]["full_context"]["3"]
    generated = sum(len(ep.segments[t.generated]) for t in ep.turns)
    assert r["packed"]["tokens"] == r["packed"]["padded_tokens"] == sum(len(s) for s in ep.segments)
    assert r["packed"]["loss_tokens"] == r["per_turn"]["loss_tokens"] == generated
    contexts = [len(ep.context_ids(t.context)) + len(ep.segments[t.generated]) for t in ep.turns]
    assert r["per_turn"]["tokens"] == sum(contexts)
    assert r["per_turn"]["padded_tokens"] == 3 * max(contexts)


def test_learner_cli_writes_result_json(tmp_path):
    out = tmp_path / "learner.json"
    torch.manual_seed(0)
    assert main(["--turns", "2", "--repeats", "1", "--warmup", "0", "--prompt", "16", "--generated", "4",
                 "--observation", "8", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["benchmark"] == "learner"
    assert data["command"].startswith("python -m experiments.bench.learner --turns 2")
    for key in ("machine", "model", "versions", "settings", "headline", "notes", "per_policy"):
        assert data[key], key
    assert data["model"]["parameters"] > 0 and data["model"]["overrides"]["hidden_size"] == 576
    assert data["versions"]["torch"]
    assert data["settings"]["episode_shape"] == {"prompt": 16, "generated": 4, "observation": 8, "jitter": 0.25}
    assert data["per_policy"]["mem1"]["2"]["check"]["logp_max_abs_diff"] <= 1e-4


def test_bad_settings_are_clear_errors(char_model):
    model, vocab = char_model
    with pytest.raises(ValueError, match="generated=0"):
        EpisodeShape(generated=0)
    with pytest.raises(ValueError, match="turns"):
        run(model, vocab, turns=(0,), shape=SHAPE)


def _episode(policy: str, n: int, prompt: int, turns: list[tuple[int, int]], keep_last: bool):
    """A real Episode record: every turn generates `gen` tokens and gets `obs` observation
    tokens; the context is the prompt plus either the last (generated, observation) pair
    (mem1-like, `keep_last`) or everything so far (full context)."""
    from policies.records import GENERATED, OBSERVATION, Episode, Segment, SegmentRef, Turn, memory_metrics

    ep = Episode.start(f"{policy}-n{n}", tuple(range(prompt)), "", policy=policy, n=n, max_turns=len(turns))
    history: list[int] = []
    for gen, obs in turns:
        refs = [0] + (history[-2:] if keep_last else history)
        ep, g = ep.add_segment(Segment(GENERATED, (1,) * gen))
        ep, o = ep.add_segment(Segment(OBSERVATION, (2,) * obs))
        ep = ep.add_turn(Turn(tuple(SegmentRef(i) for i in refs), g, (0.0,) * gen, "stop", observation=o,
                              info={"valid": True}))
        history += [g, o]
    return ep.finish(**memory_metrics(ep), end_reason="budget")


def test_memory_scaling_summary_and_headline_from_episodes():
    """The benchmark's figures are the episodes' token counts: peak = max(context + generated),
    the prompt is reported apart, and the target check compares mem1's largest N with its smallest."""
    from experiments.bench.memory_scaling import headline, summarise

    episodes = [
        _episode("mem1", 1, 100, [(20, 0)], keep_last=True),  # peak 100 + 20
        _episode("mem1", 16, 130, [(30, 40), (30, 40), (30, 40)], keep_last=True),  # peak 130 + 70 + 30
        _episode("full_context", 1, 100, [(20, 0)], keep_last=False),  # 120
        _episode("full_context", 16, 130, [(30, 40), (30, 40), (30, 40)], keep_last=False),  # 130 + 140 + 30
    ]
    per = summarise(episodes)
    assert list(per) == ["mem1", "full_context"]
    m1, m16 = per["mem1"]["1"], per["mem1"]["16"]
    assert (m1["peak_tokens_mean"], m16["peak_tokens_mean"]) == (120.0, 230.0)
    assert (m1["prompt_tokens_mean"], m16["prompt_tokens_mean"]) == (100.0, 130.0)
    assert (m1["peak_beyond_prompt_mean"], m16["peak_beyond_prompt_mean"]) == (20.0, 100.0)
    assert m16["calls"] == 3 and m16["turns_mean"] == 3 and m16["end_reasons"] == {"budget": 1}
    assert per["full_context"]["16"]["peak_tokens_mean"] == 300.0
    head = headline(per)
    assert head["mem1"]["peak_ratio"] == pytest.approx(230 / 120, abs=1e-4)
    assert head["mem1"]["meets_target"] is False
    assert head["mem1"]["prompt_tokens_ratio"] == pytest.approx(1.3) and head["mem1"]["peak_beyond_prompt_ratio"] == 5.0
    assert head["full_context"]["grows_with_n"] is True and head["full_context"]["peak_ratio"] == 2.5
    assert head["full_over_mem1_at_n_max"] == pytest.approx(300 / 230, abs=1e-4)
    flat = headline(summarise([_episode("mem1", 1, 100, [(20, 0)], True), _episode("mem1", 8, 104, [(20, 0)], True)]))
    assert flat["mem1"]["meets_target"] is True and "full_context" not in flat


def test_memory_scaling_config_is_the_eval_config_with_overrides(tmp_path):
    from experiments.bench.memory_scaling import build_config
    from experiments.config import ConfigError

    config, overrides = build_config([4, 1, 1], 3, "transformers", tmp_path, 6, ["mem1", "window(k=2)"])
    assert config.data.n_values == [1, 4] and config.data.tasks_per_n == 3
    assert config.sampler.backend == "transformers" and config.sampler.temperature == 0.0
    assert config.env.max_turns_cap == 6 and config.policies == ["mem1", "window(k=2)"]
    assert f"output_dir={tmp_path}" in overrides
    with pytest.raises((ConfigError, ValueError), match="nonsense"):
        build_config([1], 1, "vllm", tmp_path, None, ["nonsense"])


def test_contention_note_only_when_the_machine_was_shared():
    from experiments.bench import contention_note

    assert contention_note([0.4, 1.9]) is None
    assert "reached 3.2" in contention_note([0.4, 3.2, 1.0])
