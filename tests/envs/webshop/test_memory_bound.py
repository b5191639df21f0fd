"""MEM1's claim on WebShop, checked on the real parts: a 12-turn shopping episode played
through the rollout loop (experiments/rollout.py) with the SmolLM2 tokenizer and chat
template, once under the `mem1` memory policy and once under `full_context`. The model's
turns are scripted (MEM1 tag protocol, notes of about the same length each turn), since the
property is about the memory policy and the env: the context `mem1` gives the model stays
within one prompt plus one turn, while `full_context` grows with every page read.
"""

from typing import Sequence

import pytest

from envs.webshop import WebShopConfig, WebShopEnv
from experiments.rollout import EpisodeRequest, rollout
from policies.chat import ChatFormat
from policies.memory import make_memory_policy
from policies.samplers import Completion, Sampler, SamplingParams

TURNS = 12


class ScriptedSampler(Sampler):
    """Answers call k with the k-th scripted turn for every prompt of the batch, and keeps
    the prompts it was given (what the model saw)."""

    def __init__(self, tokenizer, script: Sequence[str]):
        self.tokenizer = tokenizer
        self.eos_token_ids = frozenset({tokenizer.eos_token_id})
        self.script = list(script)
        self.prompts: list[list[list[int]]] = []

    def generate(self, prompts, params=SamplingParams(), seeds=None) -> list[Completion]:
        text = self.script[len(self.prompts)]
        self.prompts.append([list(p) for p in prompts])
        ids = tuple(self.tokenizer.encode(text, add_special_tokens=False))
        return [Completion(ids, (0.0,) * len(ids), text, "stop") for _ in prompts]

    def load_weights(self, weights) -> None:
        raise NotImplementedError("a scripted sampler has no weights")


def shopping_script(goal, product) -> list[str]:
    """Twelve turns: search, page through the results and back, open the product, read two
    tabs, choose a wrong colour, correct it, choose the second option, buy."""
    groups = list(product.options)
    right = [next(v for v in goal.goal_options if v in product.options[g]) for g in groups]
    wrong = next(v for v in product.options[groups[0]] if v != right[0])
    actions = [
        f"search[{goal.instruction}]", "click[next >]", "click[< prev]", f"click[{goal.asin.lower()}]",
        "click[description]", "click[< prev]", "click[features]", "click[< prev]",
        f"click[{wrong}]", f"click[{right[0]}]", f"click[{right[1]}]", "click[buy now]",
    ]  # fmt: skip
    assert len(actions) == TURNS
    return [f"<think>Notes (step {t + 1}): want {goal.instruction[:80]}; on it.</think><answer>{a}</answer>" for t, a in enumerate(actions)]


@pytest.fixture(scope="module")
def played(generated_catalog, engine, tokenizer):
    goal = next(g for g in generated_catalog.goals if len(g.goal_options) == 2
                and g.asin in [p.asin for p in engine.search(g.instruction.lower())[:10]]
                and len(engine.search(g.instruction.lower())) > 10)
    product = generated_catalog.product(goal.asin)
    sampler = ScriptedSampler(tokenizer, shopping_script(goal, product))
    chat = ChatFormat(tokenizer)
    requests = [
        EpisodeRequest(goal, WebShopEnv(engine, WebShopConfig(max_turns=TURNS)), make_memory_policy(spec), tags={"policy": spec, "n": 1})
        for spec in ("mem1", "full_context")
    ]
    params = SamplingParams(temperature=0.0, max_new_tokens=64)
    mem1, full = rollout(requests, sampler, chat, params, max_model_len=1 << 16)
    return mem1, full, sampler


def context_tokens(ep) -> list[int]:
    return [len(ep.context_ids(t.context)) for t in ep.turns]


def test_both_episodes_shop_for_twelve_turns_and_buy(played):
    mem1, full, sampler = played
    for ep in (mem1, full):
        assert len(ep.turns) == TURNS and ep.info["end_reason"] == "answer" and ep.info["terminated"]
        assert ep.info["reward"] == 1.0 and ep.info["success"] == 1.0
        assert all(t.info["valid"] for t in ep.turns)
        assert [t.info["page"] for t in ep.turns][:5] == ["results", "results", "results", "item", "description"]
    # what each call was given is exactly the context the episode records
    assert len(sampler.prompts) == TURNS
    for k, batch in enumerate(sampler.prompts):
        assert batch == [mem1.context_ids(mem1.turns[k].context), full.context_ids(full.turns[k].context)]


def test_mem1_context_stays_bounded_while_full_context_grows(played):
    mem1, full, _ = played
    prompt = len(mem1.segments[0])
    assert prompt == len(full.segments[0])
    turn_sizes = [len(mem1.segments[t.generated]) + len(mem1.segments[t.observation]) for t in mem1.turns[:-1]]

    mem1_ctx, full_ctx = context_tokens(mem1), context_tokens(full)
    # mem1: the prompt, then the prompt plus only the previous turn (its notes, action, page)
    assert mem1_ctx == [prompt] + [prompt + s for s in turn_sizes]
    bound = prompt + max(turn_sizes)
    assert max(mem1_ctx) <= bound
    assert max(mem1_ctx[6:]) <= max(mem1_ctx[:6]) + 64  # no drift: late turns cost what early ones did (pages differ a little)
    # full_context: every earlier turn stays, so the context grows each turn, by that turn's size
    assert full_ctx == [prompt + sum(turn_sizes[:t]) for t in range(TURNS)]
    assert all(b > a for a, b in zip(full_ctx, full_ctx[1:]))
    # beyond the prompt, the last full-context call carries ~6x what mem1's largest did (measured: 4375 vs 743 tokens)
    assert full_ctx[-1] - prompt > 4 * (max(mem1_ctx) - prompt)
    # the memory metrics the evaluation reports follow the same picture
    assert mem1.info["peak_context_tokens"] == max(mem1_ctx) and full.info["peak_context_tokens"] == full_ctx[-1]
    assert mem1.info["peak_tokens"] < full.info["peak_tokens"]
    assert mem1.info["attention_span"] < full.info["attention_span"]
