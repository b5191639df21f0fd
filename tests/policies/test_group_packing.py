"""A GRPO group packed into one row, its prompt laid out once (policies/packer.py, "Groups"),
gives the same log-probs and the same gradients as packing each episode on its own."""

import zlib

import numpy as np
import pytest
import torch

from policies import columns as C
from policies.memory import make_memory_policy
from policies.packer import (
    PackedGroup,
    collate,
    dense_mask,
    episode_token_values,
    group_token_rewards,
    pack_episode,
    pack_group,
    pad_columns,
    token_logp,
    token_rewards,
)
from policies.records import GENERATED, OBSERVATION, Episode, Segment, Turn

G = 4
INSTRUCTION = (
    "Answer the questions. Think inside <think></think>, keeping what you know so far; search with "
    "<search>query</search>, and give the final answers as <answer>a1; a2</answer>.\n"
)
QUESTION = "Question 1: who founded the town of Varo? Question 2: which river flows through Ulm?"
WORDS = "the river town founder map search found Varo Ulm Danube north bridge old record".split()


def tokens(tokenizer, text: str) -> tuple[int, ...]:
    return tuple(tokenizer.encode(text, add_special_tokens=False))


def group_episodes(tokenizer, policy_spec: str, *, seed: int = 0, prompts: list[str] | None = None) -> list[Episode]:
    """G episodes of one task as the rollout plays them under a memory policy: the same
    prompt token ids, then each its own turns (2 to 4 of them) of real text."""
    rng = np.random.default_rng(seed)
    prompts = prompts or [INSTRUCTION + QUESTION] * G
    episodes = []
    for i, prompt in enumerate(prompts):
        policy = make_memory_policy(policy_spec)
        ep = Episode.start(f"task-{i}", tokens(tokenizer, prompt), prompt)
        n_turns = int(rng.integers(2, 5))
        for t in range(n_turns):
            context = policy.context(ep)
            words = " ".join(rng.choice(WORDS, int(rng.integers(2, 9))))
            text = f"<think>episode {i}, turn {t}: {words}</think>\n<search>{' '.join(rng.choice(WORDS, 2))}</search>"
            gen = tokens(tokenizer, text)
            ep, g = ep.add_segment(Segment(GENERATED, gen, text))
            obs = None
            if t < n_turns - 1:
                passage = f"<information>Doc {t}: {' '.join(rng.choice(WORDS, int(rng.integers(3, 12))))}.</information>"
                ep, obs = ep.add_segment(Segment(OBSERVATION, tokens(tokenizer, passage), passage))
            ep = ep.add_turn(Turn(context=context, generated=g, logp=tuple(rng.normal(size=len(gen)).tolist()),
                                  finish_reason="stop", reward=float(rng.normal()), observation=obs,
                                  state_span=(0, len(gen) // 2)))
        episodes.append(ep)
    return episodes


@pytest.fixture
def small_tiles(monkeypatch):
    """Tiles of 8 tokens, so the group row spans many tiles and the tile-sparse path skips
    the tiles where one episode would see another."""
    from policies import tile_attention

    monkeypatch.setattr(tile_attention, "TILE", 8)


def _logp_and_grads(model, batch, weights: torch.Tensor, attention: str):
    """Log-probs (B, L) and the gradients of sum(logp x weights) over the loss tokens."""
    model.zero_grad(set_to_none=True)
    logp = token_logp(model, batch, attention=attention)
    (logp * weights * batch.loss_mask).sum().backward()
    grads = {k: p.grad.detach().clone() for k, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return logp.detach(), grads


@pytest.mark.parametrize("attention", ["sdpa", "tiles"])
@pytest.mark.parametrize("policy", ["mem1", "full_context"])
def test_group_packing_equals_per_episode_packing(tokenizer, tiny_model, policy, attention, small_tiles):
    episodes = group_episodes(tokenizer, policy, seed=zlib.crc32(policy.encode()))
    weights = np.asarray([1.0, -0.5, 2.0, 0.25], dtype=np.float32)  # e.g. per-episode advantages

    singles = [pack_episode(e) for e in episodes]
    per_episode = collate(singles)
    w_single = torch.from_numpy(weights)[:, None].expand_as(per_episode.old_logp)
    lp_single, g_single = _logp_and_grads(tiny_model, per_episode, w_single, attention)

    group = pack_group(episodes)
    batch = collate([group])
    w_group = torch.from_numpy(episode_token_values(group, weights))[None]
    lp_group, g_group = _logp_and_grads(tiny_model, batch, w_group, attention)

    for i in range(G):
        expected = lp_single[i][per_episode.loss_mask[i]]
        got = lp_group[0][torch.from_numpy(group.episode_ids == i)]
        assert got.shape == expected.shape
        assert torch.max(torch.abs(got - expected)).item() <= 1e-4, f"episode {i}"

    assert g_single.keys() == g_group.keys()
    scale = max(g.abs().max().item() for g in g_single.values())
    assert scale > 0
    for k in g_single:
        diff = (g_group[k] - g_single[k]).abs().max().item()
        assert diff <= 1e-4 * scale, f"{k}: gradient differs by {diff:.2e} (largest gradient {scale:.2e})"

    if attention == "tiles":  # the group row is really tile-sparse: episodes do not see each other
        from policies.tile_attention import tile_plan

        mask = dense_mask(batch.block_ids, batch.chains)
        visited = sum((t.stop - t.start) * len(t.keys) for t in tile_plan(mask)[0])
        assert visited < mask.shape[-1] ** 2


@pytest.mark.parametrize("policy", ["mem1", "full_context"])
def test_group_lays_the_prompt_out_once(tokenizer, policy):
    episodes = group_episodes(tokenizer, policy, seed=1)
    singles = [pack_episode(e) for e in episodes]
    group = pack_group(episodes)
    prompt = len(episodes[0].segments[0])
    assert isinstance(group, PackedGroup) and group.num_episodes == G and group.shared_tokens == prompt
    assert group.num_tokens == sum(p.num_tokens for p in singles) - (G - 1) * prompt
    assert (group.input_ids[:prompt] == np.asarray(episodes[0].segments[0].token_ids)).all()
    assert (group.position_ids[:prompt] == np.arange(prompt)).all()
    # every loss token keeps its turn, sampling log-prob and position; episode_ids says whose it is
    assert (group.episode_ids[~group.loss_mask] == -1).all()
    for i, p in enumerate(singles):
        mine = group.episode_ids == i
        assert mine.sum() == p.loss_mask.sum()
        assert (group.turn_ids[mine] == p.turn_ids[p.loss_mask]).all()
        assert (group.old_logp[mine] == p.old_logp[p.loss_mask]).all()
        assert (group.position_ids[mine] == p.position_ids[p.loss_mask]).all()
        assert (group.input_ids[mine] == p.input_ids[p.loss_mask]).all()
    # no token of one episode sees a token of another
    batch = collate([group])
    mask = dense_mask(batch.block_ids, batch.chains)[0, 0]
    owner = np.full(group.num_tokens, -1)
    start = prompt
    for i, p in enumerate(singles):
        owner[start : start + p.num_tokens - prompt] = i
        start += p.num_tokens - prompt
    owner = torch.from_numpy(owner)
    cross = (owner[:, None] >= 0) & (owner[None, :] >= 0) & (owner[:, None] != owner[None, :])
    assert not (mask & cross).any()
    assert mask[owner >= 0][:, :prompt].all()  # ... and every one of them sees the whole prompt


def test_mismatched_prompts_are_a_clear_error(tokenizer):
    prompts = [INSTRUCTION + QUESTION] * G
    prompts[2] = INSTRUCTION + "Question 1: who built the bridge of Ulm? Question 2: where is Varo?"
    episodes = group_episodes(tokenizer, "mem1", prompts=prompts)
    with pytest.raises(ValueError, match=r"episode 2 \('task-2'\) has a different prompt from episode 0"):
        pack_group(episodes)
    with pytest.raises(ValueError, match="no episodes"):
        pack_group([])
    with pytest.raises(ValueError, match="allowed"):
        pack_group(episodes, share="all")


def test_prompts_sharing_a_prefix(tokenizer, tiny_model):
    """SFT-like traces: the same instruction, different questions. share='prefix' lays the
    common prefix out once; each episode keeps the rest of its prompt; same log-probs."""
    questions = ["Question: who founded Varo?", "Question: which river flows through Ulm?",
                 "Question: where is the old bridge?", "Question: who drew the north map?"]
    prompts = [INSTRUCTION + q for q in questions]
    episodes = group_episodes(tokenizer, "mem1", prompts=prompts, seed=3)
    ids = [np.asarray(e.segments[0].token_ids) for e in episodes]
    common = min(next((j for j in range(min(len(a), len(ids[0]))) if a[j] != ids[0][j]), min(len(a), len(ids[0])))
                 for a in ids[1:])
    assert 0 < common < min(len(a) for a in ids)
    with pytest.raises(ValueError, match="different prompt"):
        pack_group(episodes)
    singles = [pack_episode(e) for e in episodes]
    group = pack_group(episodes, share="prefix")
    assert group.shared_tokens == common
    assert group.num_tokens == sum(p.num_tokens for p in singles) - (G - 1) * common
    # positions stay those of sampling time: each episode's prompt rest continues the prefix
    with torch.no_grad():
        lp_single = token_logp(tiny_model, per_episode := collate(singles))
        lp_group = token_logp(tiny_model, collate([group]))[0]
    for i in range(G):
        expected = lp_single[i][per_episode.loss_mask[i]]
        got = lp_group[torch.from_numpy(group.episode_ids == i)]
        assert torch.max(torch.abs(got - expected)).item() <= 1e-4
    no_common = [INSTRUCTION, "Other " + INSTRUCTION]
    with pytest.raises(ValueError, match="shares no prompt prefix"):
        pack_group(group_episodes(tokenizer, "mem1", prompts=no_common), share="prefix")


def test_columns_rewards_and_advantages_per_episode(tokenizer):
    episodes = group_episodes(tokenizer, "mem1", seed=5)
    group = pack_group(episodes)
    single = pack_episode(episodes[0])
    # plain episodes: the same columns as before, no episode column
    assert C.EPISODE_IDS not in pad_columns([single, pack_episode(episodes[1])])
    cols = pad_columns([group, single])  # a group row and a plain row pad together
    assert cols[C.EPISODE_IDS].shape == cols[C.INPUT_IDS].shape
    assert (cols[C.EPISODE_IDS][0, : group.num_tokens] == group.episode_ids).all()
    assert (cols[C.EPISODE_IDS][1] == np.where(cols[C.LOSS_MASK][1], 0, -1)).all()
    assert collate([group, single]).input_ids.shape == (2, group.num_tokens)

    # each episode's turn rewards land on that episode's turns, as token_rewards does per episode
    rewards = group_token_rewards(group, [[t.reward for t in e.turns] for e in episodes])
    for i, e in enumerate(episodes):
        p = pack_episode(e)
        expected = token_rewards(p, [t.reward for t in e.turns])[p.loss_mask]
        assert np.allclose(rewards[group.episode_ids == i], expected)
    assert (rewards[group.episode_ids < 0] == 0).all()

    adv = episode_token_values(group, [0.5, -1.0, 0.0, 2.0])
    assert (adv[group.episode_ids == 3] == 2.0).all() and (adv[group.episode_ids < 0] == 0).all()
    with pytest.raises(ValueError, match="one value per episode"):
        episode_token_values(group, [1.0, 2.0])
