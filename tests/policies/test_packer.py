"""Packed exact replay == per-turn replay, for every memory policy (the correctness gate of
docs/packing.md), plus the layout docs/packing.md gives for MEM1."""

import zlib

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.memory import make_memory_policy
from policies.models import tiny_model_config
from policies.packer import collate, dense_mask, pack_episode, per_turn_replay, token_logp
from policies.records import GENERATED, OBSERVATION, Episode, Segment, Turn

POLICIES = ["mem1", "full_context", "window(k=2)", "mem1,budget=3", "window(k=1),budget=2"]
VOCAB = 300


def random_episode(policy_spec: str, rng: np.random.Generator, turns: int | None = None) -> Episode:
    """Play an episode with random token ids under a memory policy, as the rollout would."""
    policy = make_memory_policy(policy_spec)
    prompt = tuple(rng.integers(1, VOCAB, rng.integers(3, 12)).tolist())
    ep = Episode.start("t", prompt)
    n_turns = turns if turns is not None else int(rng.integers(1, 6))
    for t in range(n_turns):
        context = policy.context(ep)
        gen = tuple(rng.integers(1, VOCAB, rng.integers(1, 9)).tolist())
        ep, g = ep.add_segment(Segment(GENERATED, gen))
        obs_idx = None
        if t < n_turns - 1:
            ep, obs_idx = ep.add_segment(Segment(OBSERVATION, tuple(rng.integers(1, VOCAB, rng.integers(1, 7)).tolist())))
        span = (0, int(rng.integers(0, len(gen) + 1)))
        ep = ep.add_turn(
            Turn(context=context, generated=g, logp=tuple(rng.normal(size=len(gen)).tolist()),
                 finish_reason="stop", observation=obs_idx, state_span=span)
        )
    return ep


@pytest.fixture(scope="module")
def tiny():
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(tiny_model_config(VOCAB), dtype=torch.float32).eval()


def replay_logp(model, episode: Episode) -> list[torch.Tensor]:
    """The obvious path: every turn's context on its own, plain causal forward."""
    out = []
    for turn in episode.turns:
        ctx = episode.context_ids(turn.context)
        gen = list(episode.segments[turn.generated].token_ids)
        ids = torch.tensor([ctx + gen])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0].float()
        lp = torch.log_softmax(logits[len(ctx) - 1 : -1], -1).gather(-1, torch.tensor(gen)[:, None])[:, 0]
        out.append(lp)
    return out


@pytest.fixture
def small_tiles(monkeypatch):
    """Tiles of 4 tokens, so the short random episodes span many tiles and the tile-sparse
    path really skips some."""
    from policies import tile_attention

    monkeypatch.setattr(tile_attention, "TILE", 4)


@pytest.mark.parametrize("attention", ["sdpa", "tiles"])
@pytest.mark.parametrize("policy", POLICIES)
def test_packed_equals_per_turn_replay(tiny, policy, attention, small_tiles):
    rng = np.random.default_rng(zlib.crc32(policy.encode()))  # stable across runs, unlike salted hash()
    episodes = [random_episode(policy, rng) for _ in range(6)]
    batch = collate([pack_episode(e) for e in episodes])
    with torch.no_grad():
        packed = token_logp(tiny, batch, attention=attention)
    for i, ep in enumerate(episodes):
        expected = torch.cat(replay_logp(tiny, ep))
        got = packed[i][batch.loss_mask[i]]
        assert got.shape == expected.shape
        assert torch.max(torch.abs(got - expected)).item() <= 1e-4


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), policy=st.sampled_from(POLICIES))
def test_packed_equals_replay_property(tiny, seed, policy):
    ep = random_episode(policy, np.random.default_rng(seed))
    batch = collate([pack_episode(ep)])
    with torch.no_grad():
        got = token_logp(tiny, batch)[0][batch.loss_mask[0]]
    assert torch.allclose(got, torch.cat(replay_logp(tiny, ep)), atol=1e-4, rtol=0)


def test_per_turn_replay_path_matches(tiny):
    ep = random_episode("mem1", np.random.default_rng(3), turns=4)
    rows = per_turn_replay(ep)
    batch = collate(rows)
    with torch.no_grad():
        got = token_logp(tiny, batch)
    expected = replay_logp(tiny, ep)
    for t, row in enumerate(rows):
        assert set(row.turn_ids[row.loss_mask].tolist()) == {t}
        assert torch.allclose(got[t][batch.loss_mask[t]], expected[t], atol=1e-4, rtol=0)


def test_mem1_layout_matches_design():
    """prompt | G1 | O1 | G2 | G2' O2 | G3 | G3' O3 | G4: the prompt once, each observation
    once, each generated segment at most twice, and loss only on the originals."""
    ep = random_episode("mem1", np.random.default_rng(7), turns=4)
    p = pack_episode(ep)
    seg_len = [len(s) for s in ep.segments]  # 0 prompt, then G1 O1 G2 O2 G3 O3 G4
    prompt, g1, o1, g2, o2, g3, o3, g4 = seg_len
    expected_len = prompt + g1 + o1 + g2 + (g2 + o2) + g3 + (g3 + o3) + g4
    assert p.num_tokens == expected_len
    assert p.loss_mask.sum() == g1 + g2 + g3 + g4
    # G2' restarts right after the prompt
    g2_copy_start = prompt + g1 + o1 + g2
    assert p.position_ids[g2_copy_start] == prompt
    # G3 (original) sits after the copy, at positions prompt + |G2| + |O2| onwards
    g3_start = g2_copy_start + g2 + o2
    assert p.position_ids[g3_start] == prompt + g2 + o2
    assert p.loss_mask[g3_start : g3_start + g3].all()


def test_full_context_never_copies():
    ep = random_episode("full_context", np.random.default_rng(11), turns=5)
    p = pack_episode(ep)
    assert p.num_tokens == sum(len(s) for s in ep.segments)
    assert (p.position_ids == np.arange(p.num_tokens)).all()


def test_mask_is_subset_of_causal_and_padding_is_isolated():
    eps = [random_episode(s, np.random.default_rng(i)) for i, s in enumerate(POLICIES)]
    batch = collate([pack_episode(e) for e in eps])
    mask = dense_mask(batch.block_ids, batch.chains)[:, 0]
    causal = torch.tril(torch.ones_like(mask[0]))
    assert not (mask & ~causal).any()  # FlexAttention can skip every tile above the diagonal
    assert mask.any(-1).all()  # no empty softmax row, padding included
    pad = batch.block_ids < 0
    assert not (mask & pad.unsqueeze(1) & ~pad.unsqueeze(2)).any()  # real tokens never see padding


def test_logp_length_mismatch_is_a_clear_error():
    ep = random_episode("mem1", np.random.default_rng(0), turns=1)
    bad = ep.__class__(ep.task_id, ep.segments, (ep.turns[0].__class__(**{**ep.turns[0].__dict__, "logp": (0.0,) * 99}),))
    with pytest.raises(ValueError, match="log-probs for"):
        pack_episode(bad)


def test_tile_sparse_attention_equals_dense_sdpa_with_gradients(tiny, small_tiles):
    """Same log-probs and same gradients as SDPA with the dense mask (padded rows included),
    while visiting fewer key positions than the dense mask has."""
    from policies.tile_attention import tile_plan

    rng = np.random.default_rng(7)
    episodes = [random_episode(p, rng, turns=6) for p in ("mem1", "window(k=2)", "full_context")]
    batch = collate([pack_episode(e) for e in episodes])
    results = {}
    for attention in ("sdpa", "tiles"):
        tiny.zero_grad(set_to_none=True)
        logp = token_logp(tiny, batch, attention=attention)
        (-(logp * batch.loss_mask).sum()).backward()
        results[attention] = (logp.detach(), {k: p.grad.clone() for k, p in tiny.named_parameters() if p.grad is not None})
    tiny.zero_grad(set_to_none=True)
    (lp_dense, g_dense), (lp_tiles, g_tiles) = results["sdpa"], results["tiles"]
    assert torch.allclose(lp_dense[batch.loss_mask], lp_tiles[batch.loss_mask], atol=1e-5, rtol=0)
    assert g_dense.keys() == g_tiles.keys()
    for k in g_dense:
        assert torch.allclose(g_dense[k], g_tiles[k], atol=1e-5, rtol=1e-4), k
    mask = dense_mask(batch.block_ids, batch.chains)
    visited = sum((t.stop - t.start) * len(t.keys) for t in tile_plan(mask)[0])
    assert visited < mask.shape[-1] ** 2  # mem1's row: masked tiles are skipped


def test_tiles_survive_gradient_checkpointing(tiny, small_tiles, monkeypatch):
    """The learner's model keeps packed_attention, so when gradient checkpointing recomputes
    each layer inside backward() the tile kernel runs again with its plan (a switch for the
    forward call alone would be over by then, and the recompute would fall back to another
    kernel, or fail on a FlexAttention mask). Gradients equal the plain pass's."""
    import copy

    from policies import tile_attention

    calls = []
    kernel = tile_attention.tile_sparse_attention
    monkeypatch.setattr(tile_attention, "tile_sparse_attention", lambda *a, **k: calls.append(1) or kernel(*a, **k))
    batch = collate([pack_episode(random_episode(p, np.random.default_rng(5), turns=5)) for p in ("mem1", "window(k=2)")])

    def grads(model, attention):
        model.zero_grad(set_to_none=True)
        logp = token_logp(model, batch, attention=attention)
        (-(logp * batch.loss_mask).sum()).backward()
        return {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}

    plain = grads(tiny, "sdpa")
    tiny.zero_grad(set_to_none=True)
    checkpointed = copy.deepcopy(tiny)
    checkpointed.gradient_checkpointing_enable()
    checkpointed.train()  # checkpointing recomputes only in training mode
    tile_attention.keep_packed_attention(checkpointed)
    calls.clear()
    got = grads(checkpointed, "tiles")
    layers = checkpointed.config.num_hidden_layers
    assert len(calls) == 2 * layers  # each layer's forward, and its recompute in backward
    assert checkpointed.config._attn_implementation == tile_attention.PACKED
    assert got.keys() == plain.keys()
    for k in plain:
        assert torch.allclose(got[k], plain[k], atol=1e-5, rtol=1e-4), k


def test_unknown_attention_is_a_clear_error(tiny):
    batch = collate([pack_episode(random_episode("mem1", np.random.default_rng(0), turns=2))])
    with pytest.raises(ValueError, match="allowed"):
        token_logp(tiny, batch, attention="dense")
