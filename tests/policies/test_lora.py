"""LoRA (peft) in the learner's module: only the adapters train, the samplers get the merged
weights under the base model's Hugging Face names, and the KL reference is the base model
with the adapters off. A GRPO run with LoRA and KL trains through RLlib and syncs the
merged weights into the sampler."""

import numpy as np
import pytest
import torch
from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from experiments.config import ConfigError, LoraSection, TrainConfig, validate
from experiments.env_runner import ACTION_SPACE, OBS_SPACE
from policies.models import load_model
from policies.packer import collate, pack_episode, token_logp
from policies.rl_module import LOGP, CausalLMModule
from tests.policies.test_packer import random_episode

LORA = LoraSection(r=4, alpha=8.0).model_dump()


def build_module(model_dir, **config):
    return RLModuleSpec(module_class=CausalLMModule, observation_space=OBS_SPACE, action_space=ACTION_SPACE,
                        model_config={"model": model_dir, "reference": True, **config}).build()


def randomise_adapters(module, seed=0):
    """peft starts B at zero (the adapters add nothing): give them values that change the model."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.policy.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)


@pytest.fixture(scope="module")
def batch():
    return collate([pack_episode(random_episode("mem1", np.random.default_rng(seed), turns=3)) for seed in range(2)])


def test_only_the_adapters_get_gradients(tiny_model_dir, batch):
    module = build_module(tiny_model_dir, lora=LORA, gradient_checkpointing=True)
    randomise_adapters(module)
    out = module.packed_forward(batch)
    (out[LOGP] * batch.loss_mask).sum().backward()
    grads = {n for n, p in module.policy.named_parameters() if p.grad is not None}
    trainable = {n for n, p in module.policy.named_parameters() if p.requires_grad}
    assert grads == trainable and grads and all(".lora_A." in n or ".lora_B." in n for n in grads)
    # r x (in + out) per targeted projection: 2 layers x (q, k, v, o, gate, up, down) of the tiny llama
    h, kv, inter = 128, 64, 256
    per_layer = 4 * ((h + h) + (h + kv) * 2 + (h + h) + (h + inter) * 2 + (inter + h))
    assert sum(p.numel() for n, p in module.policy.named_parameters() if n in trainable) == 2 * per_layer
    assert module.ref is None  # no second copy of the model


def test_inference_state_is_the_merged_base_model(tiny_model_dir, batch):
    module = build_module(tiny_model_dir, lora=LORA)
    randomise_adapters(module)
    state = module.get_state(inference_only=True)
    base = load_model(tiny_model_dir)
    assert set(state) == set(base.state_dict())  # the samplers' names, nothing of peft's
    q = module.lm.model.layers[1].self_attn.q_proj
    by_hand = q.base_layer.weight + (LORA["alpha"] / LORA["r"]) * q.lora_B["default"].weight @ q.lora_A["default"].weight
    torch.testing.assert_close(state["model.layers.1.self_attn.q_proj.weight"], by_hand.detach())
    assert not torch.equal(state["model.layers.1.self_attn.q_proj.weight"], base.state_dict()["model.layers.1.self_attn.q_proj.weight"])
    torch.testing.assert_close(state["model.norm.weight"], base.state_dict()["model.norm.weight"])
    # a plain model loaded with it (what a sampler does on weight sync) computes the policy's log-probs
    base.load_state_dict(state)
    with torch.no_grad():
        torch.testing.assert_close(token_logp(base, batch), module.packed_forward(batch, entropy=False)[LOGP], atol=1e-5, rtol=1e-5)


def test_reference_is_the_base_model_with_adapters_off(tiny_model_dir, batch):
    module = build_module(tiny_model_dir, lora=LORA)
    randomise_adapters(module)
    ref = module.reference_logp(batch)
    with torch.no_grad():
        base = token_logp(load_model(tiny_model_dir), batch)
        policy = module.packed_forward(batch, entropy=False)[LOGP]
    mask = batch.loss_mask
    torch.testing.assert_close(ref[mask], base[mask], atol=1e-5, rtol=1e-5)
    assert (policy[mask] - base[mask]).abs().max() > 1e-2  # the adapters were on for the policy
    assert any(m.merged is False for m in module.lm.modules() if hasattr(m, "merged"))  # adapters back on, unmerged


def test_master_weights_stay_float32(tiny_model_dir):
    """A full fine-tune in float32 under autocast keeps float32 parameters; LoRA on a bfloat16
    base keeps its adapters (all that trains) in float32 and the frozen base in bfloat16."""
    full = build_module(tiny_model_dir, dtype="float32", autocast="bfloat16")
    assert {p.dtype for p in full.parameters() if p.requires_grad} == {torch.float32}
    lora = build_module(tiny_model_dir, dtype="bfloat16", lora=LORA)
    assert {p.dtype for p in lora.parameters() if p.requires_grad} == {torch.float32}
    assert {p.dtype for p in lora.parameters() if not p.requires_grad} == {torch.bfloat16}


def test_a_bfloat16_lora_module_checkpoints_and_restores(tiny_model_dir, tmp_path, batch):
    """RLlib's checkpoint of the module (save_to_path -> get_state): numpy has no bfloat16, so
    the state must stay torch tensors; a fresh module restored from it computes the same."""
    module = build_module(tiny_model_dir, dtype="bfloat16", lora=LORA)
    randomise_adapters(module, seed=3)
    module.save_to_path(tmp_path / "module")
    restored = build_module(tiny_model_dir, dtype="bfloat16", lora=LORA)
    restored.restore_from_path(tmp_path / "module")
    saved, back = module.get_state(), restored.get_state()
    assert saved.keys() == back.keys() and any(v.dtype == torch.bfloat16 for v in back.values())
    assert all(torch.equal(saved[k], back[k]) for k in saved)
    with torch.no_grad():
        torch.testing.assert_close(restored.packed_forward(batch, entropy=False)[LOGP], module.packed_forward(batch, entropy=False)[LOGP])


def test_lora_config_errors_name_the_fields(tiny_model_dir):
    with pytest.raises(ConfigError, match=r"model\.lora.*training\.trainable_layers|training\.trainable_layers.*model\.lora"):
        validate({"model": {"lora": {"r": 4}}, "training": {"trainable_layers": 1}, "env": {"kind": "toy"}}, TrainConfig)
    with pytest.raises(ConfigError, match=r"model\.lora\.r"):
        validate({"model": {"lora": {"r": 0}}, "env": {"kind": "toy"}}, TrainConfig)
    with pytest.raises(ValueError, match=r"model\.lora\.target_modules=\['no_such_proj'\]"):
        build_module(tiny_model_dir, lora={**LORA, "target_modules": ["no_such_proj"]})


@pytest.mark.usefixtures("ray_cluster")
def test_grpo_with_lora_and_kl_syncs_merged_weights(char_model_dir, tmp_path):
    """Two GRPO iterations with LoRA and KL on through RLlib: the KL term is reported, only
    adapters moved, and the sampler's weights equal the learner's merged weights."""
    from experiments.algorithm import build_algorithm_config, iteration_metrics
    from tests.experiments.test_training import toy_config

    config = toy_config(char_model_dir, tmp_path, **{
        "model.lora": {"r": 4, "alpha": 8.0}, "algorithm.lr": 1e-2, "algorithm.kl_coef": 0.01, "training.iterations": 2,
    })
    algo = build_algorithm_config(config).build_algo()
    try:
        metrics = [iteration_metrics(algo.train()) for _ in range(2)]
        module = algo.learner_group._learner.module["default_policy"]
        assert "loss/kl_ref" in metrics[-1] and metrics[-1]["loss/kl_ref"] > 0
        sampler = algo.env_runner_group.local_env_runner.sampler
        merged = module.get_state(inference_only=True)
        base = load_model(char_model_dir).state_dict()
        for name, value in sampler.model.state_dict().items():
            torch.testing.assert_close(value, merged[name])
        moved = [n for n in merged if not torch.equal(merged[n], base[n])]
        assert moved and all(n.endswith("_proj.weight") for n in moved)  # only LoRA-targeted weights changed
    finally:
        algo.stop()
