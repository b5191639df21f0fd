"""Losses and advantage estimators against numbers worked out by hand (in the comments)."""

import math

import pytest
import torch

from policies.losses import (
    ADVANTAGES,
    KL_ESTIMATORS,
    OBJECTIVES,
    POLICY_LOSSES,
    AdvantageInputs,
    explained_variance,
    gae_advantages,
    grpo_advantages,
    masked_mean,
    value_loss,
    whiten,
)


def test_grpo_group_normalised():
    # group 0: returns 1, 0 -> mean .5, std .5 -> +1, -1; group 1 likewise; group 2 all equal -> 0
    returns = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.3, 0.3])
    groups = torch.tensor([0, 0, 1, 1, 2, 2])
    mask = torch.ones(6, 3, dtype=torch.bool)
    mask[0, 2] = False
    adv, ret = grpo_advantages(returns, groups, mask)
    assert ret is None
    assert torch.allclose(adv[:, 0], torch.tensor([1.0, -1.0, 1.0, -1.0, 0.0, 0.0]), atol=1e-4)
    assert adv[0, 2] == 0  # off the loss mask
    # Dr. GRPO: centred only
    adv2, _ = grpo_advantages(returns, groups, mask, scale_by_std=False)
    assert torch.allclose(adv2[:4, 0], torch.tensor([0.5, -0.5, 0.5, -0.5]))


def test_clipped_loss_worked_numbers():
    loss_fn = POLICY_LOSSES["clip"]
    mask = torch.ones(1, 2, dtype=torch.bool)
    # ratio 1 everywhere: loss = -mean(A) = -(1 + -1)/2 = 0, nothing clipped
    loss, m = loss_fn(torch.zeros(1, 2), torch.zeros(1, 2), torch.tensor([[1.0, -1.0]]), mask)
    assert loss.shape == (1, 2)
    assert masked_mean(loss, mask).item() == pytest.approx(0.0) and m["clipfrac"].item() == 0
    # ratio e^.5 = 1.6487: A=+1 -> max(-1.6487, -1.2) = -1.2 (clipped);
    # A=-1 -> max(1.6487, 1.2) = 1.6487 (not clipped); mean = 0.22436, clipfrac 1/2
    logp = torch.full((1, 2), 0.5)
    loss, m = loss_fn(logp, torch.zeros(1, 2), torch.tensor([[1.0, -1.0]]), mask, clip_low=0.2, clip_high=0.2)
    assert masked_mean(loss, mask).item() == pytest.approx((-1.2 + math.exp(0.5)) / 2, abs=1e-5)
    assert m["clipfrac"].item() == pytest.approx(0.5)
    # asymmetric clip (DAPO clip-higher): A=+1 clipped at 1.28 instead
    loss, _ = loss_fn(logp[:, :1], torch.zeros(1, 1), torch.ones(1, 1), mask[:, :1], clip_low=0.2, clip_high=0.28)
    assert loss.item() == pytest.approx(-1.28, abs=1e-5)


def test_clipped_loss_gradient_only_through_unclipped_tokens():
    logp = torch.tensor([[0.5, 0.0]], requires_grad=True)
    loss, _ = POLICY_LOSSES["clip"](logp, torch.zeros(1, 2), torch.ones(1, 2), torch.ones(1, 2, dtype=torch.bool))
    loss.mean().backward()
    # token 0 is clipped (ratio 1.65 > 1.2 with A>0): no gradient; token 1: d/dlogp(-ratio)/2 = -0.5
    assert logp.grad[0, 0].item() == 0.0
    assert logp.grad[0, 1].item() == pytest.approx(-0.5)


def test_kl_estimators_worked_numbers():
    # p = 0.5, p_ref = 0.25: k1 = log 2, k2 = (log 2)^2 / 2, k3 = 0.5 - 1 + log 2
    logp, ref = torch.tensor(math.log(0.5)), torch.tensor(math.log(0.25))
    assert KL_ESTIMATORS["k1"](logp, ref).item() == pytest.approx(math.log(2))
    assert KL_ESTIMATORS["k2"](logp, ref).item() == pytest.approx(math.log(2) ** 2 / 2)
    assert KL_ESTIMATORS["k3"](logp, ref).item() == pytest.approx(0.5 - 1 + math.log(2))
    # k3 is never negative, k1 is when p < p_ref
    assert KL_ESTIMATORS["k3"](ref, logp).item() >= 0 > KL_ESTIMATORS["k1"](ref, logp).item()


def test_gae_worked_numbers_skips_observation_tokens():
    # generated tokens at 0, 1, 3 (token 2 is an observation); reward 1 on the last token
    mask = torch.tensor([[True, True, False, True]])
    rewards = torch.tensor([[0.0, 0.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 0.5, 9.0, 0.5]])  # the observation's value is ignored
    adv, ret = gae_advantages(rewards, values, mask, gamma=1.0, lam=1.0)
    # deltas: 0 + .5 - .5 = 0, 0, 1 + 0 - .5 = .5 -> advantages .5 .5 .5, returns 1 1 1
    assert torch.allclose(adv, torch.tensor([[0.5, 0.5, 0.0, 0.5]]))
    assert torch.allclose(ret, torch.tensor([[1.0, 1.0, 0.0, 1.0]]))
    adv, _ = gae_advantages(rewards, values, mask, gamma=1.0, lam=0.5)
    # a3 = .5, a1 = 0 + .5 * .5 = .25, a0 = .125
    assert torch.allclose(adv, torch.tensor([[0.125, 0.25, 0.0, 0.5]]))


def test_value_loss_and_explained_variance():
    mask = torch.ones(1, 2, dtype=torch.bool)
    returns = torch.tensor([[1.0, 0.0]])
    loss = value_loss(returns.clone(), returns.clone(), returns, mask)
    assert loss.sum().item() == 0 and explained_variance(returns, returns, mask).item() == pytest.approx(1.0)
    # values = old values = 0, so clipping changes nothing: errors (1, 0) -> 0.5 * (1, 0)
    loss = value_loss(torch.zeros(1, 2), torch.zeros(1, 2), returns, mask)
    assert loss.tolist() == [[0.5, 0.0]]
    # values moved past the clip: v = 1 from old 0 with clip .2 -> clipped .2, error (.8)^2 > 0
    loss = value_loss(torch.ones(1, 2), torch.zeros(1, 2), returns, mask, clip=0.2)
    assert loss[0, 0].item() == pytest.approx(0.5 * 0.8**2)
    # returns (1, 0, [9 masked]): variance .25; the mean .5 as value explains nothing (0),
    # values (0, 1) err by 1 everywhere: 1 - 1 / .25 = -3; the masked token counts nowhere
    returns, mask = torch.tensor([[1.0, 0.0, 9.0]]), torch.tensor([[True, True, False]])
    assert explained_variance(torch.full((1, 3), 0.5), returns, mask).item() == pytest.approx(0.0)
    assert explained_variance(torch.tensor([[0.0, 1.0, 0.0]]), returns, mask).item() == pytest.approx(-3.0)


def test_registries_and_whiten():
    assert set(ADVANTAGES) == {"grpo", "gae"} and set(KL_ESTIMATORS) == {"k1", "k2", "k3"}
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[True, True, True, False]])
    w = whiten(x, mask)
    assert masked_mean(w, mask).abs().item() < 1e-6 and w[0, 3] == 0


def test_objectives_registry_sft_is_the_nll_of_the_tokens():
    assert set(OBJECTIVES) == {"grpo", "ppo", "sft"} and set(POLICY_LOSSES) == {"clip", "nll"}
    assert OBJECTIVES["ppo"].critic and not OBJECTIVES["grpo"].critic and not OBJECTIVES["sft"].sampled
    logp = torch.log(torch.tensor([[0.5, 0.25, 0.9]]))
    mask = torch.tensor([[True, True, False]])
    loss, metrics = POLICY_LOSSES[OBJECTIVES["sft"].policy_loss](logp, logp, torch.zeros(1, 3), mask)
    assert loss[0, :2].tolist() == pytest.approx([math.log(2), math.log(4)]) and loss[0, 2] == 0 and metrics == {}
    x = AdvantageInputs(loss_mask=mask, driver_advantages=torch.full((1, 3), 2.0), token_rewards=None, old_values=None)
    assert OBJECTIVES["grpo"].advantages(x)["advantages"].tolist() == [[2.0, 2.0, 0.0]]
    assert OBJECTIVES["sft"].advantages(x)["advantages"].abs().sum() == 0
