"""Memory the model writes itself: `summary` (one rolling summary) and `amem` (notes in a
BM25 store), with real parts: the tiny random-init model behind the transformers sampler,
the SmolLM2 chat template, a BM25 index over the generated world and QAEnv; a scripted
sampler where the test needs notes with known words.

What is checked: actions and memory calls alternate, each memory call sees what the action
saw plus the action and the observation with the policy's instruction; the next action sees
the prompt, the written memory and the carried message; the recorded calls replay to the same
samples and pack exactly (packed log-probs = per-turn replay); the memory tokens carry loss
and get gradients; `budget` caps the summary and the retrieved notes; BM25 picks the notes
that match; action counts leave memory calls out; one training iteration under each policy
runs with sampler and learner agreeing.
"""

from dataclasses import replace

import numpy as np
import pytest
import torch

from envs import QAConfig, QAEnv
from envs.data import build_task_set, generate_world
from experiments.config import TrainConfig, validate
from experiments.rollout import EpisodeRequest, RolloutStats, rollout, search_notes
from experiments.train import train
from policies.memory import Notes, Summary, make_memory_policy
from policies.models import load_model
from policies.packer import collate, pack_episode, token_logp
from policies.records import GENERATED, MEMORY_CALL, MEMORY_PROMPT, OBSERVATION, action_turns, valid_action_rate
from policies.samplers import SamplingParams, ScriptedSampler
from tests.policies.test_packer import replay_logp

PARAMS = SamplingParams(temperature=0.0, max_new_tokens=10)
POLICIES = ["summary", "amem(k=2)"]


@pytest.fixture(scope="module")
def task():
    return build_task_set(generate_world(0, "small"), n_values=(2,), tasks_per_n=1, seed=0)[2][0]


@pytest.fixture(scope="module")
def played(sampler, chat, index, task):
    requests = [EpisodeRequest(task, QAEnv(index, QAConfig(max_turns=3)), make_memory_policy(p), seed=0, tags={"policy": p})
                for p in POLICIES]
    stats = RolloutStats()
    return rollout(requests, sampler, chat, PARAMS, stats=stats), stats


def test_actions_and_memory_calls_alternate(played):
    episodes, stats = played
    for ep, name in zip(episodes, ("summary", "amem")):
        kinds = [t.info.get(MEMORY_CALL, "action") for t in ep.turns]
        assert kinds == ["action", name, "action", name, "action"]  # none after the last action: the episode ended
        assert len(action_turns(ep)) == 3 == ep.info["turns"]
        assert valid_action_rate(ep) == 0.0  # the random model's actions; memory calls are not actions
        for i in (1, 3):
            action, memory, after = ep.turns[i - 1], ep.turns[i], ep.turns[i + 1]
            asked = ep.segments[memory.context[-1].segment]
            assert memory.context == action.context + (memory.context[-2], memory.context[-1])
            assert memory.context[-2].segment == action.generated and asked.kind == MEMORY_PROMPT
            assert ep.segments[memory.generated].kind == GENERATED and len(memory.logp) == len(ep.segments[memory.generated])
            assert ep.segments[memory.observation].kind == OBSERVATION
            # the next action: the prompt, the written memory, the carried message (the observation)
            assert [r.segment for r in after.context] == [0, memory.generated, memory.observation]
            assert ep.segments[action.observation].text in ep.segments[memory.observation].text
    # one call per turn for the actions of both policies, and one per policy for each round of memory
    assert stats.sampler_calls == 3 + 2 * 2
    assert stats.generated_tokens == sum(len(ep.segments[t.generated]) for ep in episodes for t in ep.turns)


def test_memory_calls_replay_to_the_same_samples(played, sampler):
    """Greedy re-runs of every recorded call (memory calls without the env's stop strings)
    give the same ids and log-probs."""
    episodes, _ = played
    for ep in episodes:
        for t in ep.turns:
            params = PARAMS if MEMORY_CALL in t.info else replace(PARAMS, stop=QAEnv.stop_strings)
            [c] = sampler.generate([ep.context_ids(t.context)], params)
            assert c.token_ids == ep.segments[t.generated].token_ids
            assert c.logp == pytest.approx(t.logp, abs=1e-5)


def test_written_memory_packs_exactly_and_carries_loss(played, tiny_model_dir):
    episodes, _ = played
    model = load_model(tiny_model_dir)
    batch = collate([pack_episode(e) for e in episodes])
    packed = token_logp(model, batch)
    for i, ep in enumerate(episodes):
        expected = torch.cat(replay_logp(model, ep))
        got = packed[i][batch.loss_mask[i]]
        assert torch.max(torch.abs(got.detach() - expected)).item() <= 1e-4
        memory_turns = [t for t, turn in enumerate(ep.turns) if MEMORY_CALL in turn.info]
        assert set(memory_turns) <= set(batch.turn_ids[i][batch.loss_mask[i]].tolist())
    # the memory tokens alone give the weights a gradient: the summariser/note writer trains with the agent
    memory_tokens = torch.isin(batch.turn_ids, torch.tensor([1, 3])) & batch.loss_mask
    model.zero_grad()
    (-packed[memory_tokens].sum()).backward()
    assert sum(float(p.grad.abs().sum()) for p in model.parameters() if p.grad is not None) > 0


def test_summary_budget_caps_the_summary_the_next_action_sees(sampler, chat, index, task):
    [ep] = rollout([EpisodeRequest(task, QAEnv(index, QAConfig(max_turns=2)), make_memory_policy("summary,budget=4"))],
                   sampler, chat, PARAMS)
    memory, after = ep.turns[1], ep.turns[2]
    assert len(ep.segments[memory.generated]) > 4
    assert after.context[1].segment == memory.generated and after.context[1].length(ep.segments) == 4
    assert sum(r.length(ep.segments) for r in after.context if r.segment == memory.generated) == 4


NOTES = ["alpha river flows north", "beta mountain is tall", "alpha river has fish"]


def _scripted_notes(tokenizer):
    """Actions that search; notes from NOTES in order (the memory call's context ends with
    the note instruction)."""
    written = []

    def act(context: str) -> str:
        if Notes.instruction in context[-len(Notes.instruction) - 60:]:  # before the glue that opens the reply
            written.append(NOTES[len(written)])
            return written[-1]
        return "<think>looking</think><search>alpha river</search>"

    return ScriptedSampler(act, tokenizer), written


@pytest.mark.parametrize("budget, shown", [(None, True), (3, False)])
def test_amem_retrieves_the_matching_notes_within_the_budget(tokenizer, chat, index, task, budget, shown):
    sampler, written = _scripted_notes(tokenizer)
    policy = Notes(k=1, budget=budget)
    [ep] = rollout([EpisodeRequest(task, QAEnv(index, QAConfig(max_turns=4)), policy)], sampler, chat, PARAMS)
    assert written == NOTES
    notes = [t for t in ep.turns if MEMORY_CALL in t.info]
    carried = [ep.segments[t.observation].text for t in notes]
    assert "earlier notes" not in carried[0]  # nothing written before the first note
    assert "earlier notes" not in carried[1]  # "beta mountain is tall" shares no word with the first note
    # the third note matches the first (alpha river), which then precedes the observation
    assert ("Your earlier notes:\n- alpha river flows north\n\n" in carried[2]) == shown
    assert "beta" not in carried[2]
    assert len(chat.encode(NOTES[0])) > 3  # so budget=3 really leaves the note out


def test_search_notes_ranks_by_bm25_and_tolerates_empty_notes():
    notes = ["the red car", "a blue boat", "red apples and a red car"]
    assert search_notes(notes, "red car", 2)[:2] in ([2, 0], [0, 2])
    assert 1 not in search_notes(notes, "red car", 3)
    assert search_notes(["the", "a"], "red", 2) == []  # stopwords only: nothing to index, nothing found


def test_written_memory_policies_parse_and_name_themselves():
    assert make_memory_policy("summary,budget=64").spec == "summary,budget=64"
    assert make_memory_policy("amem(k=4)").spec == "amem(k=4)" and make_memory_policy("amem").k == 3
    assert isinstance(make_memory_policy({"name": "summary"}), Summary)
    with pytest.raises(ValueError, match="at least 1 note"):
        make_memory_policy("amem(k=0)")
    with pytest.raises(TypeError, match="writes its memory with the model"):
        Summary().before_turn([])


def test_mem1_eval_plays_written_memory_on_webshop(tiny_model_dir, tmp_path):
    """The same policies on another env: WebShop pages as observations, rows per policy."""
    from experiments.config import EvalConfig
    from experiments.evaluate import evaluate
    from tests.experiments.test_evaluate_webshop import webshop_config

    config = validate({**webshop_config(tmp_path, tiny_model_dir), "policies": POLICIES}, EvalConfig)
    result = evaluate(config, quiet=True)
    assert sorted(r["policy"] for r in result.rows) == sorted(POLICIES)
    for ep in result.episodes:
        assert len(action_turns(ep)) == 3 and len(ep.turns) == 5  # three actions, a memory call after each but the last
        assert ep.segments[ep.turns[0].observation].text in ep.segments[ep.turns[1].observation].text  # the page, carried


@pytest.mark.parametrize("policy, algorithm", [("summary", "grpo"), ("amem(k=2)", "grpo"), ("summary", "ppo"), ("amem(k=2)", "ppo")])
def test_one_training_iteration_under_written_memory(tiny_model_dir, tmp_path, ray_cluster, policy, algorithm):
    config = validate({
        "name": "qa", "output_dir": str(tmp_path / "runs"),
        "model": {"name": tiny_model_dir},
        "sampler": {"backend": "transformers", "temperature": 1.0, "max_new_tokens": 16},
        "data": {"world_size": "small", "n_values": [2], "tasks_per_n": 4},
        "env": {"max_turns": 2, "few_shot": False},
        "memory": policy,
        "algorithm": {"name": algorithm, "lr": 1e-4, "group_size": 2, "tasks_per_iteration": 1, "kl_coef": 0.0},
        "training": {"iterations": 1, "export_model": False},
        "tracking": {"experiment": "tests"},
    }, TrainConfig)
    m = train(config, quiet=True).history[-1]
    assert m["rollout/episodes"] == 2 and m["rollout/turns_per_episode"] == 2  # actions only
    assert m["rollout/logp_mismatch"] < 1e-3  # memory calls too: sampler and learner agree
    assert np.isfinite(m["loss/policy"])
