"""attention="flex": the packed forward pass under transformers' "flex_attention"
implementation with our BlockMask gives the dense SDPA path's log-probs (padding rows, several
episodes per batch, a row length that is not a multiple of FlexAttention's 128-token block).

On CPU torch's FlexAttention runs forward only (compiled by transformers, ~10-20 s once per
process here), so gradients are compared on CUDA; on CPU the test checks that torch still
refuses the backward, and that `forward_packed` says so by name before compiling anything."""

import numpy as np
import pytest
import torch
from torch.nn.attention.flex_attention import _DEFAULT_SPARSE_BLOCK_SIZE, create_mask, flex_attention

from policies.packer import collate, dense_mask, flex_block_mask, pack_episode, token_logp
from tests.policies.test_packer import random_episode

# 16 turns make the mem1 row span two 128-token blocks; the others are shorter (padding rows)
EPISODES = (("mem1", 16), ("window(k=2)", 8), ("full_context", 5))


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(11)
    batch = collate([pack_episode(random_episode(policy, rng, turns=turns)) for policy, turns in EPISODES])
    length = batch.input_ids.shape[1]
    assert length > _DEFAULT_SPARSE_BLOCK_SIZE and length % _DEFAULT_SPARSE_BLOCK_SIZE != 0, length
    assert (batch.block_ids < 0).any(dim=1).sum() == len(EPISODES) - 1  # every shorter row is padded
    return batch


def test_block_mask_is_the_dense_mask(batch):
    block_mask = flex_block_mask(batch.block_ids, batch.chains)
    bsz, length = batch.input_ids.shape
    assert torch.equal(create_mask(block_mask.mask_mod, bsz, None, length, length, "cpu"), dense_mask(batch.block_ids, batch.chains))
    blocks = block_mask.to_dense()  # (B, 1, n, n): which 128 x 128 tiles the kernel visits
    assert not torch.triu(blocks[0, 0], diagonal=1).any()  # tiles above the diagonal are skipped


def test_flex_logp_equals_dense_sdpa(tiny_model, batch):
    assert tiny_model.config._attn_implementation == "sdpa"  # loaded as the learner loads it
    with torch.no_grad():
        dense = token_logp(tiny_model, batch, attention="sdpa")
        flex = token_logp(tiny_model, batch, attention="flex")
    assert tiny_model.config._attn_implementation == "sdpa"  # switched back after the call
    mask = batch.loss_mask
    assert mask.sum(dim=1).min() > 0
    assert torch.allclose(flex[mask], dense[mask], atol=1e-5, rtol=0)
    assert not flex[~mask].any()


def _logp_and_grads(model, batch, attention):
    model.zero_grad(set_to_none=True)
    logp = token_logp(model, batch, attention=attention)
    (-(logp * batch.loss_mask).sum()).backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return logp.detach(), grads


def test_flex_gradients_equal_dense_sdpa_or_cpu_refuses(tiny_model, batch):
    if torch.cuda.is_available():
        model, batch = tiny_model.to("cuda"), batch.to("cuda")
        try:
            lp_dense, g_dense = _logp_and_grads(model, batch, "sdpa")
            lp_flex, g_flex = _logp_and_grads(model, batch, "flex")
        finally:
            tiny_model.to("cpu")
        assert torch.allclose(lp_flex[batch.loss_mask], lp_dense[batch.loss_mask], atol=1e-5, rtol=0)
        assert g_flex.keys() == g_dense.keys() and g_dense
        for k in g_dense:
            assert torch.allclose(g_flex[k], g_dense[k], atol=1e-5, rtol=1e-4), k
        return
    # CPU: torch refuses FlexAttention's backward (if this starts passing, lift the refusal
    # in forward_packed and compare gradients on CPU too) ...
    q = torch.zeros(1, 1, 8, 64, requires_grad=True)
    with pytest.raises(NotImplementedError, match="backward on CPU"):
        flex_attention(q, q, q)
    # ... and forward_packed says so, naming the setting, before compiling anything
    with pytest.raises(ValueError, match=r"attention='flex' \(training.attention\) cannot train on CPU"):
        token_logp(tiny_model, batch, attention="flex")
    assert tiny_model.config._attn_implementation == "sdpa"
