"""The batched rollout loop with real parts: the tiny random-init model behind the
transformers sampler, the SmolLM2 chat template, a BM25 index over the generated world, and
QAEnv. A random model never follows the tag protocol, so QA episodes end at the turn budget
(every turn malformed); small TextEnv subclasses below cover answers, state spans and an
env that raises.

What is checked: every episode ends (answer, budget, context overflow, env error) without
stopping the others; the recorded segments are exactly what the sampler was given (the same
batches re-run greedily give the same ids and log-probs); contexts follow each episode's own
memory policy; state spans land on token boundaries; memory metrics are in Episode.info;
seeds are stable across processes.
"""

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from envs import QAConfig, QAEnv, TextEnv
from envs.data import build_task_set, generate_world
from envs.qa import QA_DEMONSTRATION
from experiments.rollout import EpisodeRequest, RolloutStats, derive_seed, rollout
from policies.memory import make_memory_policy
from policies.models import kv_bytes_per_token, tiny_model_config
from policies.records import GENERATED, OBSERVATION
from policies.samplers import SamplingParams
from policies.samplers.stops import decode

REPO = Path(__file__).resolve().parents[2]
PARAMS = SamplingParams(temperature=0.0, max_new_tokens=10)


@pytest.fixture(scope="module")
def tasks():
    return build_task_set(generate_world(0, "small"), n_values=(1, 2), tasks_per_n=1, seed=0)


def qa_requests(index, tasks, policies, max_turns=3):
    out = []
    for spec in policies:
        policy = make_memory_policy(spec)  # one instance shared by its episodes, as evaluate() does
        for n, ts in sorted(tasks.items()):
            out.append(EpisodeRequest(ts[0], QAEnv(index, QAConfig(max_turns=max_turns)), policy, seed=0, tags={"policy": spec, "n": n}))
    return out


@pytest.fixture(scope="module")
def played(sampler, chat, index, tasks):
    """Four QA episodes (mem1 and full_context, N = 1 and 2) in one rollout."""
    requests = qa_requests(index, tasks, ["mem1", "full_context"])
    ended, stats = [], RolloutStats()
    kv = kv_bytes_per_token(tiny_model_config(49152), 2)
    episodes = rollout(requests, sampler, chat, PARAMS, kv_bytes_per_token=kv, on_episode_end=ended.append, stats=stats)
    return requests, episodes, ended, stats, kv


def call_tokens(ep):
    return [(len(ep.context_ids(t.context)), len(ep.segments[t.generated])) for t in ep.turns]


def test_qa_episodes_end_at_the_budget(played):
    requests, episodes, ended, stats, _ = played
    assert [ep.info["policy"] for ep in episodes] == ["mem1", "mem1", "full_context", "full_context"]
    assert [ep.task_id for ep in episodes] == [r.task.id for r in requests]
    for ep, r in zip(episodes, requests):
        assert ep.done and ep.info["end_reason"] == "budget"
        assert ep.info["truncated"] and not ep.info["terminated"]
        assert len(ep.turns) == 3 == ep.info["turns"]
        assert ep.info["em"] == [0.0] * r.task.num_objectives and ep.info["answer"] is None
        assert all(t.info["action"] == "invalid" and not t.info["valid"] for t in ep.turns)
        assert [t.reward for t in ep.turns] == pytest.approx([-0.1] * 3)  # the format penalty each turn
        assert ep.total_reward == pytest.approx(-0.3) == ep.info["total_reward"]
        assert [t.observation is None for t in ep.turns] == [False, False, True]  # no observation after the end
    assert sorted(id(e) for e in ended) == sorted(id(e) for e in episodes)  # on_episode_end: once each, final
    assert stats.sampler_calls == 3 and stats.turns == 3  # all four episodes share each call
    assert stats.generated_tokens == sum(len(ep.segments[t.generated]) for ep in episodes for t in ep.turns)


def test_memory_metrics_in_episode_info(played):
    _, episodes, _, _, kv = played
    for ep in episodes:
        calls = call_tokens(ep)
        assert ep.info["peak_tokens"] == max(c + g for c, g in calls)
        assert ep.info["mean_tokens"] == pytest.approx(sum(c + g for c, g in calls) / len(calls))
        assert ep.info["peak_context_tokens"] == max(c for c, _ in calls)
        assert ep.info["attention_span"] == sum(c + g for c, g in calls)
        assert ep.info["peak_kv_bytes"] == ep.info["peak_tokens"] * kv
    mem1, full = episodes[1], episodes[3]  # same N=2 task under both policies
    assert mem1.task_id == full.task_id and len(mem1.segments[0]) == len(full.segments[0])
    assert full.info["peak_context_tokens"] > mem1.info["peak_context_tokens"]


def test_segments_are_what_the_chat_format_makes(played, chat):
    _, episodes, _, _, _ = played
    for ep in episodes:
        assert ep.segments[0].token_ids == chat.prompt_ids(ep.segments[0].text, QA_DEMONSTRATION)
        assert "Answer the following questions:" in ep.segments[0].text
        for t in ep.turns:
            gen = ep.segments[t.generated]
            assert gen.kind == GENERATED and len(t.logp) == len(gen)
            if t.observation is not None:
                obs = ep.segments[t.observation]
                assert obs.kind == OBSERVATION and "Your last output was invalid" in obs.text
                assert obs.token_ids == chat.observation_ids(obs.text, gen.token_ids)


def test_contexts_follow_each_episodes_policy(played):
    _, episodes, _, _, _ = played
    for ep in episodes:
        for i, turn in enumerate(ep.turns):
            segments = [r.segment for r in turn.context]
            previous = [s for t in ep.turns[:i] for s in (t.generated, t.observation)]
            if ep.info["policy"] == "mem1":
                assert segments == [0] + previous[-2:]
            else:
                assert segments == [0] + previous


def test_recorded_contexts_replay_to_the_same_samples(played, sampler):
    """Re-run each turn's batch (every episode still live at that turn, in request order, as
    the loop sampled it) from the recorded context ids: same ids, same log-probs."""
    requests, episodes, _, _, _ = played
    params = replace(PARAMS, stop=QAEnv.stop_strings)
    for t in range(max(len(ep.turns) for ep in episodes)):
        live = [ep for ep in episodes if len(ep.turns) > t]
        out = sampler.generate([ep.context_ids(ep.turns[t].context) for ep in live], params)
        for ep, c in zip(live, out):
            turn = ep.turns[t]
            assert c.token_ids == ep.segments[turn.generated].token_ids
            assert c.logp == pytest.approx(turn.logp, abs=1e-6)
            assert c.finish_reason == turn.finish_reason and c.text == ep.segments[turn.generated].text


def test_context_overflow_ends_the_episode(sampler, chat, index, tasks):
    requests = qa_requests(index, tasks, ["mem1", "full_context"])
    prompt_len = max(len(chat.prompt_ids(r.env.reset(options={"task": r.task})[0], QA_DEMONSTRATION)) for r in requests)
    # the first turn fits; the second (prompt + G1 + O1 + new tokens) does not
    episodes = rollout(requests, sampler, chat, PARAMS, max_model_len=prompt_len + PARAMS.max_new_tokens + 2)
    for ep in episodes:
        assert ep.done and ep.info["end_reason"] == "context_overflow" and ep.info["truncated"]
        assert len(ep.turns) == 1
        assert ep.info["context_tokens"] == len(ep.segments[0]) + sum(len(s) for s in ep.segments[1:3])
        assert ep.info["peak_tokens"] == len(ep.segments[0]) + len(ep.segments[1])
    stats = RolloutStats()
    none_fit = rollout(qa_requests(index, tasks, ["mem1"]), sampler, chat, PARAMS, max_model_len=64, stats=stats)
    assert stats.sampler_calls == 0
    for ep in none_fit:
        assert ep.info["end_reason"] == "context_overflow" and not ep.turns and ep.info["peak_tokens"] == 0.0


class SpanEnv(TextEnv):
    """Says the model's state is the middle half of its text, answers `max_turns` times, then
    ends the task with a reward (the `terminated` path a random model cannot reach in QA)."""

    stop_strings = ("</answer>",)

    def __init__(self, max_turns: int = 3):
        self.max_turns = max_turns

    def reset(self, *, seed=None, options=None):
        self.turn = 0
        return "Write anything.", {"task_id": options["task"].id}

    def step(self, action):
        self.turn += 1
        span = (len(action) // 4, len(action) // 2) if action else None
        info = {"action": "say", "valid": True, "state_span": span, "text": action}
        if self.turn == self.max_turns:
            return "", 1.0, True, False, {**info, "em_mean": 1.0}
        return f"Observation {self.turn}.", 0.0, False, False, info


class RaisingEnv(SpanEnv):
    """A bug on turn 2: step raises."""

    def step(self, action):
        if self.turn == 1:
            self.turn += 1
            raise RuntimeError("boom at turn 2")
        return super().step(action)


def test_state_spans_map_to_token_spans(sampler, chat, tasks, tokenizer):
    task = tasks[1][0]
    requests = [EpisodeRequest(task, SpanEnv(), make_memory_policy("mem1"), seed=s) for s in range(2)]
    episodes = rollout(requests, sampler, chat, replace(PARAMS, temperature=1.0, max_new_tokens=16))
    checked = 0
    for ep in episodes:
        assert ep.info["end_reason"] == "answer" and ep.info["terminated"] and ep.info["em_mean"] == 1.0
        for turn in ep.turns:
            text, ids = turn.info["text"], ep.segments[turn.generated].token_ids
            assert text == ep.segments[turn.generated].text
            if not text:
                assert turn.state_span is None
                continue
            a, b = len(text) // 4, len(text) // 2
            s, e = turn.state_span
            assert 0 <= s <= e <= len(ids)
            # the shortest token prefixes whose text (as the env saw it) reaches each character offset
            assert len(decode(tokenizer, ids[:s])) >= a and (s == 0 or len(decode(tokenizer, ids[: s - 1])) < a)
            assert len(decode(tokenizer, ids[:e])) >= b and (e == 0 or len(decode(tokenizer, ids[: e - 1])) < b)
            assert text[a:b] in decode(tokenizer, ids[max(s - 1, 0) : e])
            checked += 1
    assert checked >= 4


def test_env_error_ends_only_its_episode(sampler, chat, index, tasks):
    task = tasks[1][0]
    requests = [
        EpisodeRequest(task, RaisingEnv(max_turns=4), make_memory_policy("mem1"), tags={"policy": "raising"}),
        EpisodeRequest(task, QAEnv(index, QAConfig(max_turns=4)), make_memory_policy("full_context"), tags={"policy": "qa"}),
        EpisodeRequest(task, SpanEnv(max_turns=4), make_memory_policy("window(k=2)"), tags={"policy": "span"}),
    ]
    broken, qa, span = rollout(requests, sampler, chat, PARAMS)
    assert broken.done and broken.info["end_reason"].startswith("env_error") and "boom at turn 2" in broken.info["end_reason"]
    assert broken.info["truncated"] and len(broken.turns) == 2
    assert broken.turns[-1].info["action"] == "error" and broken.turns[-1].observation is None
    assert "peak_tokens" in broken.info  # still accounted
    assert qa.info["end_reason"] == "budget" and len(qa.turns) == 4
    assert span.info["end_reason"] == "answer" and len(span.turns) == 4
    # window(k=2): the last turn sees the prompt and the two turns before it
    assert [r.segment for r in span.turns[3].context] == [0, 3, 4, 5, 6]


def test_sampling_is_reproducible_from_seeds(sampler, chat, index, tasks):
    params = replace(PARAMS, temperature=1.0)
    runs = [rollout(qa_requests(index, tasks, ["mem1"], max_turns=2), sampler, chat, params) for _ in range(2)]
    assert [[s.token_ids for s in ep.segments] for ep in runs[0]] == [[s.token_ids for s in ep.segments] for ep in runs[1]]
    other = rollout([replace(r, seed=1) for r in qa_requests(index, tasks, ["mem1"], max_turns=2)], sampler, chat, params)
    assert [ep.segments[1].token_ids for ep in other] != [ep.segments[1].token_ids for ep in runs[0]]


def test_derive_seed_is_stable_across_processes():
    parts = [(0, "world-test-n2-0", 0), (3, "task", 17), ("iteration", 5, "sample", 2)]
    here = [derive_seed(*p) for p in parts]
    assert all(0 <= s < 2**31 for s in here) and len(set(here)) == len(here)
    assert derive_seed(0, "a", 1) != derive_seed(0, "a", 2) != derive_seed(1, "a", 1)
    code = f"from experiments.rollout import derive_seed; print([derive_seed(*p) for p in {parts!r}])"
    for hash_seed in ("1", "2"):  # Python's str hash() differs between these processes
        out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={"PYTHONHASHSEED": hash_seed, "PATH": ""},
                             capture_output=True, text=True, timeout=120, check=True).stdout
        assert out.strip() == str(here)
