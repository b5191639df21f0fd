"""The scripted QA expert, played through the real rollout loop (QAEnv over a BM25 index of
the small generated world, the SmolLM2 chat template, `ScriptedSampler`): it reads only the
context the memory policy gives it, so under mem1 everything it still needs must be in the
state it wrote the turn before.

What is checked: it follows the protocol on every turn, answers every objective right at
N = 1, 2 and 4 under both mem1 and full_context with the same actions, writes only facts it
was shown (grounded), keeps its state compact, answers when one turn is left, and gives a
hop up (answer "unknown") when the retriever never returns it.
"""

import re

import pytest

from envs import QAConfig, QAEnv
from envs.data import build_task_set, generate_world
from envs.data.expert import QAExpert
from envs.retrieval import build_or_load_index
from envs.retrieval.base import Retriever
from experiments.rollout import EpisodeRequest, rollout
from policies.chat import ChatFormat
from policies.memory import make_memory_policy
from policies.samplers import SamplingParams, ScriptedSampler

PARAMS = SamplingParams(temperature=0.0, max_new_tokens=200)


@pytest.fixture(scope="module")
def world():
    return generate_world(0, "small")


@pytest.fixture(scope="module")
def index(world, tmp_path_factory):
    return build_or_load_index(world.write(tmp_path_factory.mktemp("world")).corpus, "bm25")


def play(world, retriever, tokenizer, tasks, policy, config=QAConfig(few_shot=False)):
    sampler = ScriptedSampler(QAExpert(world).act, tokenizer)
    requests = [EpisodeRequest(task=t, env=QAEnv(retriever, config), memory=make_memory_policy(policy), tags={"n": n})
                for n, ts in sorted(tasks.items()) for t in ts]
    return rollout(requests, sampler, ChatFormat(tokenizer), PARAMS)


@pytest.mark.parametrize("policy", ["mem1", "full_context"])
def test_expert_solves_composed_tasks_under_any_memory_policy(world, index, tokenizer, policy):
    tasks = build_task_set(world, n_values=(1, 2, 4), tasks_per_n=6, seed=3, split="train")
    episodes = play(world, index, tokenizer, tasks, policy)
    assert all(t.info["valid"] for ep in episodes for t in ep.turns)
    assert all(ep.info["end_reason"] == "answer" for ep in episodes)
    assert [ep.info["em_mean"] for ep in episodes] == [1.0] * len(episodes)
    # one search per hop at most twice, one answer
    for ep, task in zip(episodes, [t for _, ts in sorted(tasks.items()) for t in ts]):
        assert len(ep.turns) <= 2 * sum(task.meta["hops"]) + 1


def test_same_actions_under_mem1_and_full_context(world, index, tokenizer):
    tasks = build_task_set(world, n_values=(2,), tasks_per_n=4, seed=5, split="test")
    texts = {p: [[ep.segments[t.generated].text for t in ep.turns] for ep in play(world, index, tokenizer, tasks, p)]
             for p in ("mem1", "full_context")}
    assert texts["mem1"] == texts["full_context"]  # its state carries all it needs


def test_states_are_grounded_and_compact(world, index, tokenizer):
    tasks = build_task_set(world, n_values=(4,), tasks_per_n=4, seed=1, split="train")
    for ep in play(world, index, tokenizer, tasks, "mem1"):
        seen = ep.segments[0].text
        for t in ep.turns:
            state = re.search(r"<think>(.*?)</think>", ep.segments[t.generated].text).group(1)
            # every name and number in the notes was shown before (the prompt or an observation)
            for word in re.findall(r"[A-Z][a-z]+|\d[\d,]*\d|\d", re.sub(r"Q\d+:", "", state)):
                assert word in seen or word in ("Nothing", "The"), (word, state)
            if t.observation is not None:
                seen += ep.segments[t.observation].text
            assert len(ep.segments[t.generated]) <= 20 + 16 * ep.info["num_objectives"]  # notes and answers, a few tokens each per question


def test_answers_when_one_turn_is_left(world, index, tokenizer):
    tasks = build_task_set(world, n_values=(4,), tasks_per_n=3, seed=2, split="train")
    for ep in play(world, index, tokenizer, tasks, "mem1", QAConfig(few_shot=False, max_turns=3)):
        assert ep.info["end_reason"] == "answer" and len(ep.turns) == 3
        assert 0.0 <= ep.info["em_mean"] < 1.0 and ep.turns[-1].info["valid"]


class NothingFound(Retriever):
    def search(self, queries, topk):
        return [[] for _ in queries]


def test_gives_up_a_hop_the_retriever_never_returns(world, tokenizer):
    tasks = build_task_set(world, n_values=(2,), tasks_per_n=2, seed=0, split="train")
    for ep in play(world, NothingFound(), tokenizer, tasks, "mem1"):
        assert ep.info["answer"] == "unknown; unknown" and ep.info["end_reason"] == "answer"
        assert len(ep.turns) == 5  # two queries per question (keyword, then the bare name), then the answer
        assert all(t.info["valid"] for t in ep.turns)


def test_context_without_a_task_prompt_is_a_clear_error(world):
    with pytest.raises(ValueError, match="no QA task prompt"):
        QAExpert(world).act("hello")
