"""RL losses and advantage estimators for packed LLM episodes, registered by name.

Everything here is a pure function of tensors laid out by the packer (policies/packer.py):
one row per episode, loss only where `loss_mask` is set (generated tokens; never prompt or
observations). Dims: B episodes, L packed tokens, G rollouts per task (GRPO group).

Advantage estimators (`ADVANTAGES[name](...) -> (advantages (B, L), returns (B, L) | None)`):
- `grpo`: the group-relative advantage of GRPO (Shao et al. 2024, DeepSeekMath): each
  episode's return minus the mean of its group, divided by the group's std
  (`scale_by_std=False` gives the Dr. GRPO variant, Liu et al. 2025), on every generated
  token of the episode.
- `gae`: PPO's generalized advantage estimation (Schulman et al. 2016) over the generated
  tokens of an episode in turn order, with each turn's reward on its last token and the
  value head's estimates per token; this is what the MEM1 reference (verl) does for
  multi-turn rollouts, observations being skipped rather than treated as steps.

Policy losses (`POLICY_LOSSES[name](logp, old_logp, advantages, loss_mask, **kw) ->
(per_token_loss (B, L), metrics)`):
- `clip`: the PPO clipped surrogate with asymmetric clip range (clip_low, clip_high);
- `nll`: the negative log-likelihood of the tokens (supervised fine-tuning on traces).
Losses are per token; the learner sums them over a minibatch's generated tokens and divides
by their count (token-level, every generated token weighs the same, as in DAPO, Yu et al.
2025), which keeps gradient accumulation over micro-batches exact.

Objectives (`OBJECTIVES[algorithm.name]`, what the learner runs): an advantage source with
one signature (`AdvantageInputs -> columns`) and a policy loss. `grpo`: the driver's group
advantages and the clipped surrogate; `ppo`: GAE from the value head and the clipped
surrogate; `sft`: no advantages and the NLL. The learner calls the objective; it has no
branch per algorithm.

KL to the frozen reference, estimator by name (Schulman, "Approximating KL divergence"):
k1 = log r, k2 = (log r)^2 / 2, k3 = exp(-log r) - 1 + log r, with log r = logp - ref_logp.
Applied either as a loss term (GRPO's way) or as a per-token reward penalty (PPO's way).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from . import columns as C

# ---------------------------------------------------------------------------- reductions


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


# ---------------------------------------------------------------------------- KL estimators


def kl_k1(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    return logp - ref_logp


def kl_k2(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    return 0.5 * (logp - ref_logp) ** 2


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    log_ratio = ref_logp - logp  # log(p_ref / p)
    return torch.exp(log_ratio) - 1.0 - log_ratio  # >= 0, unbiased for KL(p || p_ref)


KL_ESTIMATORS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {"k1": kl_k1, "k2": kl_k2, "k3": kl_k3}


# ---------------------------------------------------------------------------- advantages


def grpo_advantages(
    returns: torch.Tensor,  # (B,) episode returns
    group_ids: torch.Tensor,  # (B,) episodes with the same id share a task
    loss_mask: torch.Tensor,  # (B, L)
    *,
    scale_by_std: bool = True,
    eps: float = 1e-6,
    **_: object,
) -> tuple[torch.Tensor, None]:
    adv = torch.zeros_like(returns, dtype=torch.float32)
    for g in group_ids.unique():
        members = group_ids == g
        r = returns[members].float()
        centred = r - r.mean()
        adv[members] = centred / (r.std(unbiased=False) + eps) if scale_by_std else centred
    return adv[:, None] * loss_mask.float(), None  # (B, L)


def gae_advantages(
    token_rewards: torch.Tensor,  # (B, L): each turn's reward on its last generated token
    values: torch.Tensor,  # (B, L): value estimate per generated token
    loss_mask: torch.Tensor,  # (B, L)
    *,
    gamma: float = 1.0,
    lam: float = 1.0,
    **_: object,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE over the generated tokens of each row in packed order (turns are packed in
    order, so generated tokens are too); tokens off the mask are skipped, not steps."""
    bsz, length = token_rewards.shape
    adv = torch.zeros(bsz, length, dtype=torch.float32, device=values.device)
    for b in range(bsz):
        idx = loss_mask[b].nonzero(as_tuple=True)[0]  # (T,)
        if idx.numel() == 0:
            continue
        r, v = token_rewards[b, idx].float(), values[b, idx].float().detach()
        next_v = torch.cat([v[1:], v.new_zeros(1)])  # the episode ends after its last token
        delta = r + gamma * next_v - v
        a = torch.zeros_like(delta)
        running = delta.new_zeros(())
        for t in range(delta.numel() - 1, -1, -1):
            running = delta[t] + gamma * lam * running
            a[t] = running
        adv[b, idx] = a
    returns = adv + values.detach().float()
    return adv * loss_mask.float(), returns * loss_mask.float()


ADVANTAGES = {"grpo": grpo_advantages, "gae": gae_advantages}


def whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Normalise advantages over the valid tokens of the batch (PPO's usual practice)."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return (x - mean) * torch.rsqrt(var + eps) * mask.float()


# ---------------------------------------------------------------------------- policy losses


def clipped_policy_loss(
    logp: torch.Tensor,  # (B, L) under the current policy
    old_logp: torch.Tensor,  # (B, L) under the policy that sampled (recomputed by the learner)
    advantages: torch.Tensor,  # (B, L)
    loss_mask: torch.Tensor,  # (B, L)
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    **_: object,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    log_ratio = (logp - old_logp) * loss_mask
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    loss = torch.maximum(unclipped, clipped) * loss_mask  # (B, L)
    with torch.no_grad():
        metrics = {
            "clipfrac": masked_mean((clipped > unclipped).float(), loss_mask),
            "approx_kl": masked_mean(0.5 * log_ratio**2, loss_mask),  # k2 of new vs old
            "ratio_max": (ratio * loss_mask).max(),
        }
    return loss, metrics


def nll_loss(
    logp: torch.Tensor,  # (B, L)
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    loss_mask: torch.Tensor,  # (B, L)
    **_: object,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Supervised fine-tuning: minus the log-likelihood of each demonstrated token."""
    return -logp * loss_mask, {}


POLICY_LOSSES = {"clip": clipped_policy_loss, "nll": nll_loss}


def value_loss(
    values: torch.Tensor,  # (B, L)
    old_values: torch.Tensor,  # (B, L)
    returns: torch.Tensor,  # (B, L)
    loss_mask: torch.Tensor,  # (B, L)
    *,
    clip: float = 0.2,
) -> torch.Tensor:
    """PPO's clipped value loss per token (the larger of the clipped and unclipped squared
    errors), (B, L)."""
    clipped = old_values + torch.clamp(values - old_values, -clip, clip)
    return 0.5 * torch.maximum((values - returns) ** 2, (clipped - returns) ** 2) * loss_mask


@torch.no_grad()
def explained_variance(values: torch.Tensor, returns: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """The share of the returns' variance the values explain over the masked tokens,
    1 - mean squared error / Var(returns): 1 for a perfect critic, 0 for one no better than
    the mean return, below 0 for a worse one."""
    var = masked_mean((returns - masked_mean(returns, loss_mask)) ** 2, loss_mask)
    return 1.0 - masked_mean((returns - values) ** 2, loss_mask) / var.clamp(min=1e-8)


# ---------------------------------------------------------------------------- objectives


@dataclass(frozen=True)
class AdvantageInputs:
    """What any advantage source may read, computed once per update (before any step)."""

    loss_mask: torch.Tensor  # (B, L) bool
    driver_advantages: torch.Tensor | None  # (B, L) from the driver (GRPO's groups span the batch)
    token_rewards: torch.Tensor | None  # (B, L), KL penalty already in when kl_mode="reward"
    old_values: torch.Tensor | None  # (B, L) value head before the update (critic objectives)
    gamma: float = 1.0
    lam: float = 1.0
    whiten: bool = False


def _from_driver(x: AdvantageInputs) -> dict[str, torch.Tensor]:
    return {C.ADVANTAGES: x.driver_advantages.float() * x.loss_mask}


def _gae(x: AdvantageInputs) -> dict[str, torch.Tensor]:
    adv, returns = gae_advantages(x.token_rewards, x.old_values, x.loss_mask, gamma=x.gamma, lam=x.lam)
    return {C.ADVANTAGES: whiten(adv, x.loss_mask) if x.whiten else adv, C.RETURNS: returns, C.OLD_VALUES: x.old_values}


def _no_advantages(x: AdvantageInputs) -> dict[str, torch.Tensor]:
    return {C.ADVANTAGES: torch.zeros(x.loss_mask.shape, device=x.loss_mask.device)}


@dataclass(frozen=True)
class Objective:
    advantages: Callable[[AdvantageInputs], dict[str, torch.Tensor]]
    policy_loss: str  # a POLICY_LOSSES name
    critic: bool = False  # trains the value head (and needs its old values)
    sampled: bool = True  # the batch was sampled by this policy: its sampler log-probs are comparable


OBJECTIVES: dict[str, Objective] = {
    "grpo": Objective(_from_driver, "clip"),
    "ppo": Objective(_gae, "clip", critic=True),
    "sft": Objective(_no_advantages, "nll", sampled=False),
}
