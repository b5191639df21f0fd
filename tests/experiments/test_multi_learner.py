"""Several learners (RLlib's DDP, gloo on CPU): two learners on shards of unequal token
counts take the same update as one learner on the whole batch, stay in sync, and the env
runner's sampler gets their weights."""

import numpy as np
import pytest
import torch
from ray.rllib.core import DEFAULT_MODULE_ID

from experiments.algorithm import build_algorithm_config, iteration_metrics, shardable
from experiments.config import ConfigError, TrainConfig, validate
from experiments.train import export_policy
from policies.models import load_model
from policies import columns as C

pytestmark = pytest.mark.usefixtures("ray_cluster")


def _config(model_dir, tmp_path, num_learners, micro, **algorithm):
    return validate({
        "name": "ddp", "output_dir": str(tmp_path / "runs"),
        "model": {"name": model_dir},
        "sampler": {"backend": "transformers", "temperature": 1.0, "max_new_tokens": 16},
        "env": {"kind": "toy", "target": "aeiou", "num_tasks": 4},
        # 2 groups of 4 episodes, one row per episode: a group per learner. An entropy bonus:
        # every token has a gradient, whatever the rewards. No clipping: the gradients
        # compared are the raw ones (clipping would hide their scale)
        "algorithm": {"name": "grpo", "lr": 3e-3, "group_size": 4, "tasks_per_iteration": 2, "kl_coef": 0.0,
                      "entropy_coef": 0.01, "grad_clip": None, "micro_batch_size": micro, **algorithm},
        "training": {"iterations": 1, "num_learners": num_learners, "share_prompt": False, "export_model": False},
        "tracking": {"experiment": "tests"},
    }, TrainConfig)


def _grads(learner):
    policy = learner.module[DEFAULT_MODULE_ID].unwrapped().policy
    return {k: p.grad.detach().clone() for k, p in policy.named_parameters() if p.grad is not None}


def _weights(learner):
    return {k: v.detach().clone() for k, v in learner.module[DEFAULT_MODULE_ID].unwrapped().policy.state_dict().items()}


def _each(algo, fn):
    return [r.get() for r in algo.learner_group.foreach_learner(fn)]


def _update(algo, batch):
    results = algo.learner_group.update(batch=batch, num_epochs=1, minibatch_size=None)
    loss = [float(getattr(r[DEFAULT_MODULE_ID]["policy_loss"], "peek", lambda: r[DEFAULT_MODULE_ID]["policy_loss"])()) for r in results]
    return loss, _each(algo, lambda learner: (_grads(learner), _weights(learner)))


def test_two_learners_take_the_one_learner_update_and_sync_it_to_the_sampler(char_model_dir, tmp_path):
    """KL on (a reference model: a second forward pass), micro-batches of 3 rows (gradient
    accumulation under DDP's no_sync), 4 rows per shard with different token counts."""
    one = build_algorithm_config(_config(char_model_dir, tmp_path, 0, 8, kl_coef=0.05)).build_algo()
    two = build_algorithm_config(_config(char_model_dir, tmp_path, 2, 3, kl_coef=0.05)).build_algo()
    try:
        records = one.env_runner_group.local_env_runner.sample(iteration=0)  # the same episodes for both
        batch_one, _ = one._train_batch(records)
        batch_two, _ = two._train_batch(records)
        cols = batch_two[DEFAULT_MODULE_ID]
        assert cols[C.LOSS_MASK].shape[0] == 8  # two shards of 4 rows, one group each
        shard_tokens = [int(cols[C.LOSS_MASK][:4].sum()), int(cols[C.LOSS_MASK][4:].sum())]
        assert shard_tokens[0] != shard_tokens[1], shard_tokens  # a per-shard token mean would be wrong here

        initial = _each(two, _weights)[0]
        loss_one, [(grads_one, _)] = _update(one, batch_one)
        loss_two, [(grads_a, weights_a), (grads_b, weights_b)] = _update(two, batch_two)
        assert grads_one.keys() == grads_a.keys() and len(grads_one) > 0
        for k in grads_one:
            assert torch.allclose(grads_a[k], grads_b[k]), k  # DDP: the same averaged gradient on both
            assert torch.allclose(grads_one[k], grads_a[k], rtol=1e-4, atol=1e-6), k
        for k in weights_a:  # the same optimizer step on the same gradient: the learners stay equal
            assert torch.equal(weights_a[k], weights_b[k]), k
        assert any(not torch.equal(initial[k], weights_a[k]) for k in weights_a)
        # the loss metric is the whole batch's token mean on every learner
        assert loss_two[0] == pytest.approx(loss_two[1]) and loss_two[0] == pytest.approx(loss_one[0], rel=1e-4, abs=1e-6)

        # a whole iteration: sample, learn on both learners, sync their weights to the runner's sampler
        m = iteration_metrics(two.train())
        assert np.isfinite(m["loss/policy"]) and np.isfinite(m["loss/kl_ref"]) and m["loss/entropy"] > 0
        learned = _each(two, _weights)
        synced = two.env_runner_group.local_env_runner.sampler.model.state_dict()
        assert any(not torch.equal(weights_a[k], synced[k]) for k in synced)  # the second update arrived
        for k in synced:
            assert torch.equal(learned[0][k], learned[1][k]) and torch.equal(synced[k], learned[0][k]), k
        # the export reads the module inside DDP's wrapper
        exported = load_model(str(export_policy(two.learner_group, _config(char_model_dir, tmp_path, 2, 3), tmp_path / "model")))
        assert all(torch.equal(v, learned[0][k]) for k, v in exported.state_dict().items())
    finally:
        one.stop()
        two.stop()


def test_shardable_pads_with_rows_that_carry_no_loss():
    cols = {C.LOSS_MASK: np.ones((3, 5), dtype=bool), C.INPUT_IDS: np.arange(15).reshape(3, 5)}
    assert shardable(cols, 1, 4) is cols
    out = shardable(cols, 2, 1)  # RLlib's shards of ceil(3 / 2) rows: 2 and 1; padded: 2 and 2
    assert out[C.INPUT_IDS].shape == (4, 5) and out[C.LOSS_MASK][3].sum() == 0 and out[C.LOSS_MASK][:3].all()
    out = shardable({k: v[:1] for k, v in cols.items()}, 2, 2)  # one row: each learner needs 2 (its minibatches)
    assert out[C.LOSS_MASK].shape[0] == 4 and out[C.LOSS_MASK].sum() == 5


def test_several_learners_reject_whitening_by_name(char_model_dir, tmp_path):
    with pytest.raises(ConfigError, match="training.num_learners=2 with algorithm.whiten_advantages"):
        _config(char_model_dir, tmp_path, 2, 2, name="ppo", whiten_advantages=True)
