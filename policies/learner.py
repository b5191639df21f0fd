"""The RLlib TorchLearner for packed LLM episodes: GRPO (default), PPO, and SFT on traces.

One `update()` call (RLlib's LearnerGroup.update with the whole batch) runs, in `_update`:
1. a no-grad pass over the batch: old log-probs under the current weights (the sampler's
   log-probs differ in numerics, e.g. vLLM bf16 vs torch; the mismatch is reported as
   `rollout_logp_mismatch`), reference log-probs for KL, and PPO's old values. With one
   gradient step per batch and no critic (GRPO's default) the old log-probs come from the
   step's own forward instead (same weights: ratio 1), which saves a forward pass;
2. advantages: GRPO's group-normalised returns arrive from the driver (groups span the
   whole batch, so they are computed before the batch is sharded over learners); PPO's GAE
   is computed here from the value head, with the KL penalty in the rewards if asked;
3. `epochs` x `minibatches` optimizer steps; each minibatch is split into micro-batches
   of `micro_batch_size` episodes whose gradients accumulate, every loss normalised by the
   minibatch's generated-token count, so the result does not depend on the micro-batch
   size (tested).

With several learners (`training.num_learners` > 1) RLlib shards the batch by rows and wraps
the module in torch DDP, which averages the learners' gradients. Every count that normalises
a loss or a metric is summed over the learners first, so the averaged gradient, the loss and
the metrics equal those of one learner on the whole batch even when the shards hold different
token counts (tested); PPO's explained variance is the exception, computed on each shard; a micro-batch's gradient is all-reduced only with the minibatch's last.

RLlib's own minibatch iterator is not used (`minibatch_size=None`, `num_epochs=1` at the
call site): it cannot accumulate gradients and would re-run step 1 per minibatch.

Settings come from `config.learner_config_dict` (experiments/algorithm.py fills it from the
YAML `algorithm:` section); every key is documented in experiments/config.py.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.learner.torch.torch_learner import TorchLearner
from ray.rllib.utils.annotations import override

from . import columns as C
from .losses import KL_ESTIMATORS, OBJECTIVES, POLICY_LOSSES, AdvantageInputs, explained_variance, value_loss
from .packer import PackedBatch
from .rl_module import ENTROPY, LOGP, VALUES

log = logging.getLogger(__name__)

# Metrics of the ratio new/old policy. The first optimizer step of an update runs at the
# weights that gave the old log-probs, so its ratio is 1 and these are 0 by construction:
# they are logged from the second step on (epochs > 1 or minibatches > 1, when the batch is
# replayed off-policy), and a single on-policy step reports none rather than zeros.
RATIO_METRICS = frozenset({"clipfrac", "approx_kl"})

# The learner's settings. Their values come from the run's config (experiments/config.py,
# AlgorithmSection) and nowhere else: every one must be given, so there is no second set of
# defaults to disagree with the config's.
SETTINGS = frozenset({
    "objective",  # policies/losses.py OBJECTIVES: "grpo", "ppo" (GAE, value head) or "sft" (NLL on traces)
    "clip_low", "clip_high",
    "kl_coef", "kl_estimator",
    "kl_mode",  # "loss" (a loss term) or "reward" (a per-token penalty in the rewards, PPO)
    "entropy_coef", "vf_coef", "vf_clip", "gamma", "lam",
    "whiten_advantages",  # GAE advantages normalised over the batch
    "epochs", "minibatches",
    "micro_batch_size",  # rows per forward/backward
    "seed",
})


class Mem1Learner(TorchLearner):
    @override(TorchLearner)
    def build(self) -> None:
        given = set(self.config.learner_config_dict)
        if unknown := given - SETTINGS:
            raise ValueError(f"unknown learner settings {sorted(unknown)}; allowed: {sorted(SETTINGS)}")
        if missing := SETTINGS - given:
            raise ValueError(f"learner settings {sorted(missing)} missing from learner_config_dict (experiments/algorithm.py passes them all)")
        self.settings = dict(self.config.learner_config_dict)
        for key, registry in (("objective", OBJECTIVES), ("kl_estimator", KL_ESTIMATORS)):
            if self.settings[key] not in registry:
                raise ValueError(f"algorithm.{key}={self.settings[key]!r}: allowed {sorted(registry)}")
        self.objective = OBJECTIVES[self.settings["objective"]]
        self._rng = np.random.default_rng(self.settings["seed"])
        super().build()

    @override(TorchLearner)
    def configure_optimizers_for_module(self, module_id, config=None) -> None:
        module = self._module[module_id]
        params = [p for p in module.parameters() if p.requires_grad]  # the KL reference is frozen
        optimizer = torch.optim.AdamW(params, lr=config.lr, betas=(0.9, 0.999), weight_decay=0.0)
        self.register_optimizer(module_id=module_id, optimizer=optimizer, params=params, lr_or_lr_schedule=config.lr)

    # -- the update ----------------------------------------------------------------------

    @property
    def on_policy(self) -> bool:
        """One gradient step per batch and no critic: old log-probs = the step's own forward."""
        s = self.settings
        return s["epochs"] * s["minibatches"] == 1 and not self.objective.critic

    @property
    def world(self) -> int:
        return dist.get_world_size() if self.distributed else 1

    def _all_reduce(self, t: torch.Tensor, op=dist.ReduceOp.SUM) -> torch.Tensor:
        """`t` reduced over the learners (unchanged with one): the whole batch's value."""
        if self.distributed:
            dist.all_reduce(t, op=op)
        return t

    @override(TorchLearner)
    def _update(self, batch: dict[str, Any]) -> tuple[Any, Any, Any]:
        """`epochs` x `minibatches` optimizer steps. With several modules (one per agent) every
        step takes one minibatch of each module's own rows, so each module's optimizer and LR
        schedule step once per step; a module absent from the batch gets no gradient, and its
        optimizer's step leaves it unchanged."""
        s = self.settings
        loss_masks, extras, rows = {}, {}, {}
        for mid, cols in batch.items():
            rows[mid] = cols[C.INPUT_IDS].shape[0]
            if self.distributed and rows[mid] < s["minibatches"]:  # every learner must take the same optimizer steps
                raise ValueError(f"this learner's shard has {rows[mid]} rows, fewer than algorithm.minibatches={s['minibatches']}; "
                                 f"pad the batch with experiments.algorithm.shardable before LearnerGroup.update")
            loss_masks[mid] = cols[C.LOSS_MASK].bool()
            extras[mid] = self._prepare(mid, self.module[mid].unwrapped(), cols)  # old_logp, ref_logp, old_values, advantages, returns
        self._mismatch_max = dict.fromkeys(batch, 0.0)
        fwd_out: dict[str, torch.Tensor] = {}
        totals = {mid: torch.zeros((), device=self._device) for mid in batch}
        step = 0
        for _ in range(s["epochs"]):
            splits = {mid: np.array_split(self._rng.permutation(rows[mid]) if s["minibatches"] > 1 else np.arange(rows[mid]), s["minibatches"])
                      for mid in batch}
            for k in range(s["minibatches"]):
                if all(splits[mid][k].size == 0 for mid in batch):
                    continue
                for optim in self._optimizer_parameters:
                    optim.zero_grad(set_to_none=True)
                sums = {}
                for mid, cols in batch.items():
                    minibatch = splits[mid][k]
                    if minibatch.size == 0:
                        continue
                    fwd_out, loss, sums[mid] = self._accumulate(mid, {**cols, **extras[mid]}, loss_masks[mid], minibatch)
                    totals[mid] = totals[mid] + loss
                grads = {pid: p.grad for pid, p in self._params.items() if p.grad is not None}
                self.apply_gradients(self.postprocess_gradients(grads))
                for mid, (module_sums, n_tokens) in sums.items():
                    keys = [key for key in module_sums if step or key not in RATIO_METRICS]
                    if keys:
                        reduced = self._all_reduce(torch.stack([torch.as_tensor(module_sums[key], dtype=torch.float32, device=self._device) for key in keys]))
                        for key, v in zip(keys, reduced / n_tokens):
                            self.metrics.log_value((mid, key), float(v), window=1)
                step += 1
        if self.on_policy and self.objective.sampled:
            for mid in batch:
                worst = self._all_reduce(torch.tensor(self._mismatch_max[mid], device=self._device), op=dist.ReduceOp.MAX)
                self.metrics.log_value((mid, "rollout_logp_mismatch_max"), float(worst), window=1)
        steps = s["epochs"] * s["minibatches"]
        return fwd_out, {mid: self._all_reduce(totals[mid]) / (steps * self.world) for mid in batch}, {}

    def _accumulate(self, mid: str, cols: dict[str, Any], loss_mask: torch.Tensor, minibatch: np.ndarray):
        """Forward and backward of one module's minibatch, micro-batch by micro-batch, so the
        summed gradients are its token mean. Returns the last forward's output, the summed
        loss and (the metric token sums, the minibatch's token count)."""
        s = self.settings
        wrapped = self.module[mid]  # DDP with several learners: its forward arms the gradient all-reduce
        # the whole minibatch's tokens, over all learners' shards of it
        n_tokens = self._all_reduce(loss_mask[minibatch].sum().float()).clamp(min=1)
        # DDP divides the summed gradients by the learner count: multiplying the loss by it
        # back makes the result the token mean over the whole minibatch
        self._normalizer = n_tokens / self.world
        self._sums = {}
        total = torch.zeros((), device=self._device)
        fwd_out = {}
        for start in range(0, minibatch.size, s["micro_batch_size"]):
            last = start + s["micro_batch_size"] >= minibatch.size
            idx = torch.as_tensor(minibatch[start : start + s["micro_batch_size"]], device=self._device)
            micro = {key: v[idx] for key, v in cols.items()}
            with contextlib.nullcontext() if last or not self.distributed else wrapped.no_sync():
                fwd_out = wrapped(micro)  # forward_train: CausalLMModule._forward_train
                loss = self.compute_loss_for_module(module_id=mid, config=self.config.get_config_for_module(mid), batch=micro, fwd_out=fwd_out)
                loss.backward()
            total = total + loss.detach()
        return fwd_out, total, (self._sums, n_tokens)

    @override(TorchLearner)
    def compute_loss_for_module(self, *, module_id, config, batch, fwd_out) -> torch.Tensor:
        """Loss of one micro-batch: per-token terms summed over its generated tokens and
        divided by the whole minibatch's token count (`self._normalizer`; over all learners,
        per learner), so summing the micro-batch gradients (and averaging the learners') gives
        the token-mean gradient of the minibatch. Metric token
        sums accumulate in `self._sums`."""
        s = self.settings
        mask = batch[C.LOSS_MASK].bool()
        length = fwd_out[LOGP].shape[1]
        sel = lambda key: batch[key][:, :length]
        mask = mask[:, :length]
        f = mask.float()
        if C.OLD_LOGP in batch:
            old_logp = sel(C.OLD_LOGP)
        else:  # on-policy step (see _prepare): this forward is the old policy; ratio = 1
            old_logp = fwd_out[LOGP].detach()
        per_token, pm = POLICY_LOSSES[self.objective.policy_loss](
            fwd_out[LOGP], old_logp, sel(C.ADVANTAGES), mask, clip_low=s["clip_low"], clip_high=s["clip_high"]
        )
        metrics = {
            "policy_loss": (per_token * f).sum().detach(),
            "entropy": (fwd_out[ENTROPY] * f).sum().detach(),
            **{k: pm[k] * f.sum() for k in ("clipfrac", "approx_kl") if k in pm},
        }
        if s["entropy_coef"]:
            per_token = per_token - s["entropy_coef"] * fwd_out[ENTROPY]
        if C.OLD_LOGP not in batch and self.objective.sampled:
            mismatch = (old_logp - sel(C.SAMPLE_LOGP)).abs() * f
            metrics["rollout_logp_mismatch"] = mismatch.sum()
            self._mismatch_max[module_id] = max(self._mismatch_max[module_id], float(mismatch.max()))
        if C.REF_LOGP in batch:
            kl = KL_ESTIMATORS[s["kl_estimator"]](fwd_out[LOGP], sel(C.REF_LOGP)) * f
            metrics["kl"] = kl.sum().detach()
            metrics["ref_kl"] = (KL_ESTIMATORS["k3"](old_logp, sel(C.REF_LOGP)) * f).sum()
            if s["kl_mode"] == "loss":
                per_token = per_token + s["kl_coef"] * kl
        if VALUES in fwd_out:
            v_tok = value_loss(fwd_out[VALUES], sel(C.OLD_VALUES), sel(C.RETURNS), mask, clip=s["vf_clip"])
            per_token = per_token + s["vf_coef"] * v_tok
            metrics["value_loss"] = v_tok.sum().detach()
        for k, v in metrics.items():
            self._sums[k] = self._sums.get(k, 0.0) + v
        return (per_token * f).sum() / self._normalizer

    @torch.no_grad()
    def _prepare(self, mid: str, module, cols) -> dict[str, torch.Tensor]:
        """Everything computed once per update, before any gradient step."""
        s = self.settings
        rows = cols[C.INPUT_IDS].shape[0]
        full_len = cols[C.INPUT_IDS].shape[1]
        loss_mask = cols[C.LOSS_MASK].bool()
        want_values = self.objective.critic
        # One gradient step on fresh samples (GRPO, 1 epoch, 1 minibatch): the old policy is
        # the current one, so the update's own forward pass gives the old log-probs
        # (compute_loss_for_module) and this extra forward over every token is skipped.
        on_policy = self.on_policy
        old_logp = torch.zeros(loss_mask.shape, device=self._device)
        ref_logp = torch.zeros_like(old_logp) if module.has_reference else None
        old_values = torch.zeros_like(old_logp) if want_values else None
        for start in range(0, rows, s["micro_batch_size"]) if not on_policy or ref_logp is not None else ():
            idx = torch.arange(start, min(rows, start + s["micro_batch_size"]), device=self._device)
            micro = PackedBatch.from_columns({k: v[idx] for k, v in cols.items()})
            length = micro.input_ids.shape[1]
            if not on_policy:
                out = module.packed_forward(micro, values=want_values, entropy=False)
                old_logp[idx, :length] = out[LOGP]
                if want_values:
                    old_values[idx, :length] = out[VALUES]
            if ref_logp is not None:
                ref_logp[idx, :length] = module.reference_logp(micro)
        extra = {}
        if not on_policy:
            extra[C.OLD_LOGP] = old_logp
        if not on_policy and self.objective.sampled:
            mismatch = (old_logp - cols[C.SAMPLE_LOGP]).abs() * loss_mask
            summed, count = self._all_reduce(torch.stack([mismatch.sum(), loss_mask.sum().float()]))
            worst = self._all_reduce(mismatch.max(), op=dist.ReduceOp.MAX)
            self.metrics.log_value((mid, "rollout_logp_mismatch"), float(summed / count.clamp(min=1)), window=1)
            self.metrics.log_value((mid, "rollout_logp_mismatch_max"), float(worst), window=1)
        if ref_logp is not None:
            extra[C.REF_LOGP] = ref_logp

        rewards = cols[C.TOKEN_REWARDS].float() if C.TOKEN_REWARDS in cols else None
        if rewards is not None and ref_logp is not None and s["kl_mode"] == "reward":
            rewards = rewards - s["kl_coef"] * KL_ESTIMATORS[s["kl_estimator"]](old_logp, ref_logp) * loss_mask
        extra.update(self.objective.advantages(AdvantageInputs(
            loss_mask=loss_mask, driver_advantages=cols.get(C.ADVANTAGES), token_rewards=rewards, old_values=old_values,
            gamma=s["gamma"], lam=s["lam"], whiten=s["whiten_advantages"],
        )))
        assert all(v.shape[1] == full_len for v in extra.values())
        if C.RETURNS in extra:  # a critic: how well the values the advantages used predicted the returns
            ev = explained_variance(extra[C.OLD_VALUES], extra[C.RETURNS], loss_mask)  # the whole batch, so micro-batching cannot change it
            self.metrics.log_value((mid, "explained_variance"), float(ev), window=1)
        return extra

    @torch.no_grad()
    def nll(self, cols: dict[str, Any]) -> tuple[float, int]:
        """(summed negative log-likelihood, token count) of a batch's loss tokens under the
        current weights, without a gradient step: held-out loss of supervised fine-tuning."""
        module = self.module[DEFAULT_MODULE_ID].unwrapped()
        cols = {k: torch.as_tensor(v, device=self._device) for k, v in cols.items()}
        total, count = 0.0, 0
        for start in range(0, cols[C.INPUT_IDS].shape[0], self.settings["micro_batch_size"]):
            micro = PackedBatch.from_columns({k: v[start : start + self.settings["micro_batch_size"]] for k, v in cols.items()})
            logp = module.packed_forward(micro, values=False, entropy=False)[LOGP]
            total -= float((logp * micro.loss_mask[:, : logp.shape[1]]).sum())
            count += int(micro.loss_mask.sum())
        return total, count
