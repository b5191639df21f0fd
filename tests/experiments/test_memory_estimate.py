"""The learner memory estimate: parameter counts from config.json against the real model,
each term against a hand computation, the paper-scale GPU config within its budget (and
its .memory.md in step with the estimate), and an over-budget config refused naming the fields."""

import re
from pathlib import Path

import pytest

from experiments.config import ConfigError, TrainConfig, load_config, validate
from experiments.memory_estimate import GIB, LOGIT_BYTES, OVERHEAD_GIB, estimate, model_shape
from policies.models import DEFAULT_MODEL, load_model

GPU_CONFIG = Path("experiments/configs/train_qa_grpo_gpu.yaml")
SMOL_PARAMS = 134_515_008  # SmolLM2-135M: 49152 x 576 tied embeddings + 30 layers x 3,540,096 + final norm


def test_parameter_count_of_smollm2_from_its_config():
    shape = model_shape(DEFAULT_MODEL)
    by_hand = 49152 * 576 + 30 * (576 * 576 * 2 + 576 * 192 * 2 + 3 * 576 * 1536 + 2 * 576) + 576
    assert shape.num_params == by_hand == SMOL_PARAMS
    model = load_model(DEFAULT_MODEL)
    assert sum(p.numel() for p in model.parameters()) == SMOL_PARAMS  # parameters() counts the tied head once
    assert shape.lora_params(8, ["q_proj", "v_proj"]) == 30 * 8 * ((576 + 576) + (576 + 192))


def test_terms_match_a_hand_computation():
    """SmolLM2, full fine-tune in float32 on CPU, KL on, gradient checkpointing, 2 rows of 1024 tokens."""
    config = validate({
        "sampler": {"max_model_len": 1024, "max_new_tokens": 100},
        "env": {"kind": "toy"}, "algorithm": {"micro_batch_size": 2, "group_size": 4, "kl_coef": 0.001},
        "training": {"gradient_checkpointing": True, "share_prompt": False, "attention": "sdpa"},
    }, TrainConfig)
    est = estimate(config)
    P, L, h, q, kv, i, V = SMOL_PARAMS, 30, 576, 576, 192, 1536, 49152
    assert est.weights == 4 * P and est.gradients == 4 * P and est.optimizer == 8 * P and est.reference == 4 * P
    assert est.autocast_copies == 0 and est.ddp_buckets == 0 and est.overhead == OVERHEAD_GIB * GIB
    one_layer = 2 * h * (4 + 4) + 4 * (3 * q + 4 * kv + 4 * i)  # float32 activations per token
    assert est.activations == 2 * 1024 * (L * h * 4 + one_layer)
    assert est.logits == 2 * 100 * V * LOGIT_BYTES  # the toy task: one turn of at most 100 tokens
    assert est.attention_mask == 2 * 1024**2 * 4
    without = estimate(config.model_copy(update={"training": config.training.model_copy(update={"gradient_checkpointing": False})}))
    assert without.activations == 2 * 1024 * L * one_layer


def test_gpu_config_fits_its_budget_with_lora():
    config = load_config(GPU_CONFIG, TrainConfig)  # its own check passes
    assert config.model.lora is not None and config.training.gradient_checkpointing and config.training.gpu_memory_gb == 80
    est = estimate(config)
    assert est.total <= 80 * GIB and est.reference == 0 and est.trainable_params < est.num_params / 20
    assert 7.6e9 < est.num_params < 7.7e9  # Qwen2.5-7B


def test_over_budget_config_is_refused_naming_the_fields():
    with pytest.raises(ConfigError) as err:
        load_config(GPU_CONFIG, TrainConfig, ["model.lora=null", "model.dtype=float32"])
    message = str(err.value)
    for field in ("training.gpu_memory_gb=80", "model.name=Qwen/Qwen2.5-7B", "model.lora=unset", "model.dtype=float32",
                  "training.gradient_checkpointing=True", "sampler.max_model_len=16384"):
        assert field in message, message
    assert re.search(r"needs an estimated 1[0-9]{2}\.\d GiB", message), message


def test_unknown_model_with_a_budget_names_model_name(tmp_path):
    with pytest.raises(ConfigError, match=r"model\.name='no/such-model'.*training\.gpu_memory_gb"):
        validate({"model": {"name": "no/such-model"}, "env": {"kind": "toy"}, "training": {"gpu_memory_gb": 80}}, TrainConfig)


@pytest.mark.parametrize("column, overrides", [
    (1, []), (2, ["model.lora=null", "model.dtype=float32"]), (3, ["model.lora=null"]),
])
def test_memory_notes_agree_with_the_estimate(column, overrides):
    """train_qa_grpo_gpu.memory.md's totals are the estimate's for each variant it lists."""
    notes = GPU_CONFIG.with_suffix(".memory.md").read_text()
    total_row = next(line for line in notes.splitlines() if line.startswith("| **total**"))
    stated = float(re.search(r"([\d.]+)", total_row.split("|")[column + 1]).group(1))
    config = load_config(GPU_CONFIG, TrainConfig, [*overrides, "training.gpu_memory_gb=null"])
    assert stated == round(estimate(config).total / GIB, 1)
