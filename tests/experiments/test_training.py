"""RL training on RLlib's new API stack, end to end on CPU with tiny models: learning,
weight sync, resume, several env runners, micro-batch invariance, PPO, multi-turn QA, and
the iteration's metrics (summed over runners, ratio metrics only off-policy, failed searches)."""

import json

import mlflow
import numpy as np
import pytest
import torch

from experiments.algorithm import build_algorithm_config, iteration_metrics
from experiments.config import TrainConfig, validate
from experiments.faults import SearchFailureError, check_search_errors
from experiments.train import train
from policies.packer import collate, pack_episode
from policies.records import GENERATED, Episode, Segment, SegmentRef, Turn

pytestmark = pytest.mark.usefixtures("ray_cluster")


def toy_config(model_dir, tmp_path, **overrides):
    cfg = {
        "name": "toy", "output_dir": str(tmp_path / "runs"),
        "model": {"name": model_dir},
        "sampler": {"backend": "transformers", "temperature": 1.0, "max_new_tokens": 16},
        "env": {"kind": "toy", "target": "aeiou", "num_tasks": 4},
        "algorithm": {"name": "grpo", "lr": 3e-3, "group_size": 8, "tasks_per_iteration": 4, "kl_coef": 0.0, "micro_batch_size": 8},
        "training": {"iterations": 15, "checkpoint_every": 100},
        "tracking": {"experiment": "tests"},
    }
    for dotted, value in overrides.items():
        node = cfg
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return validate(cfg, TrainConfig)


def test_grpo_learns_a_simple_text_task(char_model_dir, tmp_path):
    """Reward = share of vowels in the output: a random policy gets ~5%; GRPO must lift it
    well past 50% in 15 iterations (a flipped sign or lost advantages leaves it near 5%)."""
    result = train(toy_config(char_model_dir, tmp_path), quiet=True)
    rewards = [h["rollout/reward"] for h in result.history]
    assert len(rewards) == 15
    assert rewards[0] < 0.15
    assert max(rewards[-3:]) > 0.5, rewards
    assert result.history[0]["rollout/groups_with_signal"] == 1.0  # continuous reward: every group has a spread
    assert "loss/clipfrac" not in result.history[0] and "loss/approx_kl" not in result.history[0]  # one on-policy step: ratio 1
    assert (result.model_dir / "config.json").exists()  # exported as a Hugging Face folder


def test_ppo_with_value_head_improves(char_model_dir, tmp_path):
    config = toy_config(char_model_dir, tmp_path, **{"algorithm.name": "ppo", "training.iterations": 10})
    result = train(config, quiet=True)
    rewards = [h["rollout/reward"] for h in result.history]
    assert "loss/value" in result.history[-1]
    assert "rollout/groups_with_signal" not in result.history[-1]  # a GRPO diagnostic: PPO has no groups
    explained = [h["loss/explained_variance"] for h in result.history]
    assert np.all(np.isfinite(explained)) and max(explained) <= 1.0, explained
    assert "loss/clipfrac" not in result.history[-1]  # one step per batch: its ratio is 1 by construction
    assert max(rewards[-3:]) > rewards[0] + 0.1, rewards


def _greedy(sampler, prompt):
    from policies.samplers import SamplingParams

    return sampler.generate([prompt], SamplingParams(temperature=0.0, max_new_tokens=12))[0]


def test_weight_sync_sampler_matches_learner(char_model_dir, tmp_path):
    """After an update, the sampler's log-probs of its own continuation equal the learner's
    new log-probs (one packed pass) and differ from the initial model's."""
    from policies.models import load_model
    from policies.packer import token_logp

    config = toy_config(char_model_dir, tmp_path, **{"algorithm.lr": 1e-2})
    algo = build_algorithm_config(config).build_algo()
    try:
        runner = algo.env_runner_group.local_env_runner
        prompt = list(runner.chat.prompt_ids("Task 0: write a line of letters."))
        before = _greedy(runner.sampler, prompt)
        algo.train()
        after = _greedy(runner.sampler, prompt)
        module = algo.learner_group._learner.module["default_policy"]

        ep = Episode.start("probe", tuple(prompt))
        ep, g = ep.add_segment(Segment(GENERATED, after.token_ids))
        ep = ep.add_turn(Turn(context=(SegmentRef(0),), generated=g, logp=after.logp, finish_reason=after.finish_reason))
        batch = collate([pack_episode(ep)])
        with torch.no_grad():
            learner_logp = token_logp(module.policy, batch)[0][batch.loss_mask[0]]
            initial_logp = token_logp(load_model(char_model_dir), batch)[0][batch.loss_mask[0]]
        sampler_logp = torch.tensor(after.logp)
        assert torch.allclose(sampler_logp, learner_logp, atol=1e-4)
        assert (sampler_logp - initial_logp).abs().max() > 1e-3
        assert before.logp != after.logp
    finally:
        algo.stop()


def test_resume_continues_iterations_and_mlflow_run(char_model_dir, tmp_path):
    first = train(toy_config(char_model_dir, tmp_path, **{"training.iterations": 2, "training.checkpoint_every": 1}), quiet=True)
    state = json.loads((first.run_dir / "run.json").read_text())
    assert first.iterations == 2 and state["checkpoints"][-1].endswith("iter_0002")

    resumed = train(toy_config(char_model_dir, tmp_path, **{"training.iterations": 3, "training.checkpoint_every": 1}), resume=True, quiet=True)
    assert resumed.run_dir == first.run_dir
    assert resumed.iterations == 3 and [h["iteration"] for h in resumed.history] == [3]
    assert resumed.mlflow_run_id == first.mlflow_run_id
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    steps = [m.step for m in mlflow.MlflowClient().get_metric_history(first.mlflow_run_id, "rollout/reward")]
    assert sorted(steps) == [1, 2, 3]
    # the checkpoint of iteration 3 is intact: a fresh algorithm restores from it
    state = json.loads((first.run_dir / "run.json").read_text())
    algo = build_algorithm_config(toy_config(char_model_dir, tmp_path)).build_algo()
    try:
        algo.restore_from_path(state["checkpoints"][-1])
        assert algo.training_iteration == 3
    finally:
        algo.stop()


def test_train_with_two_env_runners(char_model_dir, tmp_path):
    config = toy_config(char_model_dir, tmp_path, **{"training.num_env_runners": 2, "training.num_cpus_per_env_runner": 1})
    algo = build_algorithm_config(config).build_algo()
    try:
        result = algo.train()
        assert result["mem1"]["rollout/episodes"] == 4 * 8  # tasks x group size, split over both runners
        seq = algo.env_runner_group.foreach_env_runner(lambda r: r._weights_seq_no, local_env_runner=False)
        assert len(seq) == 2 and all(s >= 1 for s in seq)  # both samplers got the new weights
        # throughput counts both runners' tokens (not the first record's runner only), over the
        # slowest runner's sampling time (they sample at the same time)
        stats = algo.env_runner_group.foreach_env_runner(lambda r: r._last_stats, local_env_runner=False)
        assert len(stats) == 2 and min(s.generated_tokens for s in stats) > 0
        assert result["mem1"]["perf/generated_tokens"] == sum(s.generated_tokens for s in stats)
        assert result["mem1"]["perf/sample_tokens_per_s"] == pytest.approx(sum(s.generated_tokens for s in stats) / max(s.sample_s for s in stats))
    finally:
        algo.stop()


def test_micro_batching_and_group_rows_do_not_change_the_update(char_model_dir, tmp_path):
    """Batch 8 x accumulation 1 == batch 1 x accumulation 8, and a GRPO group packed in one
    row with its prompt once (training.share_prompt) == one row per episode: the same
    accumulated gradient. (Gradients, not parameters: Adam's first step is scale-invariant
    and amplifies float noise in near-zero gradients, so parameters would neither catch a
    normalisation bug nor agree.) Sampling is seeded, so every variant plays the same episodes."""
    from ray.rllib.core import DEFAULT_MODULE_ID

    grads, rows = [], []
    for micro, share in ((8, True), (1, True), (1, False)):
        config = toy_config(char_model_dir, tmp_path, **{"algorithm.micro_batch_size": micro, "algorithm.group_size": 4, "algorithm.tasks_per_iteration": 2, "training.share_prompt": share})
        algo = build_algorithm_config(config).build_algo()
        try:
            records = algo.env_runner_group.local_env_runner.sample(iteration=0)
            batch, _ = algo._train_batch(records)
            rows.append(batch["default_policy"]["input_ids"].shape[0])
            algo.learner_group.update(batch=batch, num_epochs=1, minibatch_size=None)
            module = algo.learner_group._learner.module[DEFAULT_MODULE_ID]
            grads.append({k: p.grad.detach().clone() for k, p in module.policy.named_parameters() if p.grad is not None})
        finally:
            algo.stop()
    assert rows == [2, 2, 8]  # two groups of four: one row each, or one row per episode
    for other in grads[1:]:
        assert grads[0].keys() == other.keys() and len(other) > 0
        for k in grads[0]:
            assert torch.allclose(grads[0][k], other[k], rtol=1e-4, atol=1e-6), k


def test_one_iteration_of_mem1_on_two_objective_qa(tiny_model_dir, tmp_path):
    """The real multi-turn path: QA env over an HTTP retriever, mem1 contexts, packed
    replay of multi-turn episodes in the learner, KL to the reference."""
    config = validate({
        "name": "qa", "output_dir": str(tmp_path / "runs"),
        "model": {"name": tiny_model_dir},
        "sampler": {"backend": "transformers", "temperature": 1.0, "max_new_tokens": 24},
        "data": {"world_size": "small", "n_values": [2], "tasks_per_n": 8},
        "env": {"max_turns": 3, "few_shot": False},
        "algorithm": {"lr": 1e-4, "group_size": 2, "tasks_per_iteration": 2, "kl_coef": 0.01},
        "training": {"iterations": 1, "export_model": False, "share_prompt": False},  # one row per episode, to compare with its peak
        "tracking": {"experiment": "tests"},
    }, TrainConfig)
    result = train(config, quiet=True)
    m = result.history[-1]
    assert m["rollout/episodes"] == 4 and m["rollout/turns_per_episode"] == 3
    assert m["memory/packed_tokens_per_episode"] > m["memory/peak_tokens"]  # three turns packed in one row
    assert "loss/kl_ref" in m and np.isfinite(m["loss/policy"])
    assert 0.0 <= m["rollout/groups_with_signal"] <= 1.0
    assert m["rollout/logp_mismatch"] < 1e-3  # sampler and learner agree (same weights, fp32)


@pytest.mark.parametrize("replay", [{"algorithm.epochs": 2}, {"algorithm.minibatches": 2}])
def test_clipfrac_and_approx_kl_are_reported_when_the_batch_is_replayed(char_model_dir, tmp_path, replay):
    """From the second optimizer step of an update on, the weights differ from those that
    gave the old log-probs: the ratio moves off 1 and approx_kl is positive."""
    algo = build_algorithm_config(toy_config(char_model_dir, tmp_path, **replay)).build_algo()
    try:
        m = iteration_metrics(algo.train())
    finally:
        algo.stop()
    assert m["loss/approx_kl"] > 0 and 0.0 <= m["loss/clipfrac"] <= 1.0


def test_failed_searches_are_counted(tiny_model_dir, tmp_path):
    """A failed search is an observation, not an error, so only rollout/search_errors shows a
    dead retriever. The QA expert plays (a random model never writes a valid search) against
    a real retriever server, which is then stopped, and then started again on its port."""
    from experiments.components import corpus_for
    from envs.retrieval import start_server_process
    from policies.samplers import ScriptedSampler

    def config(url):
        return validate({
            "name": "qa", "output_dir": str(tmp_path / "runs"),
            "model": {"name": tiny_model_dir},
            "sampler": {"backend": "transformers", "max_new_tokens": 160},
            "retriever": {"url": url, "retries": 0, "timeout_s": 5.0},
            "data": {"world_size": "small", "split": "train", "n_values": [2], "tasks_per_n": 4},
            "env": {"few_shot": False},
            "algorithm": {"group_size": 1, "tasks_per_iteration": 2, "kl_coef": 0.0},
            "tracking": {"experiment": "tests"},
        }, TrainConfig)

    probe = config("http://127.0.0.1:1")  # only to find the corpus; the server gives the real URL
    corpus = corpus_for(probe.data, probe.retriever)
    server = start_server_process(corpus, "bm25")
    algo = None
    try:
        algo = build_algorithm_config(config(server.url)).build_algo()
        runner = algo.env_runner_group.local_env_runner
        runner.sampler.close()
        runner.sampler = ScriptedSampler(runner.domain.expert().act, runner.tokenizer)
        _, live = algo._train_batch(runner.sample(iteration=0))
        server.stop()
        _, dead = algo._train_batch(runner.sample(iteration=1))
        server = start_server_process(corpus, "bm25", port=int(server.url.rsplit(":", 1)[1]))  # back, at the same URL
        _, back = algo._train_batch(runner.sample(iteration=2))
    finally:
        server.stop()
        if algo is not None:
            algo.stop()
    assert live["rollout/search_errors"] == 0 and live["rollout/search_error_rate"] == 0.0
    assert live["rollout/em"] > 0  # the searches worked: the expert found answers
    assert dead["rollout/search_errors"] >= dead["rollout/episodes"]  # every episode searched, every search failed
    assert dead["rollout/search_error_rate"] == 1.0
    # and the run's rule (training.max_search_error_rate) stops on it, naming the retriever
    check_search_errors(live, 0.5, server.url, iteration=1)
    with pytest.raises(SearchFailureError, match=rf"iteration 2: 100% of the searches failed .*max_search_error_rate=0.5; is the retriever at {server.url} up"):
        check_search_errors(dead, 0.5, server.url, iteration=2)
    check_search_errors(dead, None, server.url, iteration=2)  # None: never stops
    assert back["rollout/search_errors"] == 0 and back["rollout/em"] > 0  # the same clients recover once it is back


def test_grpo_with_the_kl_in_the_reward_is_rejected_naming_the_fields(char_model_dir, tmp_path):
    """GRPO's advantages are group-normalised returns: a per-token KL penalty in the rewards
    would silently vanish, so the config refuses it (PPO takes it, GRPO takes a loss term)."""
    from experiments.config import ConfigError

    with pytest.raises(ConfigError, match=r"kl_mode='reward' with name='grpo'"):
        toy_config(char_model_dir, tmp_path, **{"algorithm.kl_mode": "reward", "algorithm.kl_coef": 0.01})
    assert toy_config(char_model_dir, tmp_path, **{"algorithm.kl_mode": "reward", "algorithm.name": "ppo", "algorithm.kl_coef": 0.01})
    assert toy_config(char_model_dir, tmp_path, **{"algorithm.kl_mode": "reward", "algorithm.kl_coef": 0.0})  # no KL: nothing lost


def test_memory_section_reads_the_string_form_and_names_bad_entries():
    """`memory:` is typed (a sweep searches memory.budget); `mem1,budget=512` is the same section."""
    from experiments.config import ConfigError

    as_string = validate({"memory": "mem1,budget=512"}, TrainConfig)
    as_section = validate({"memory": {"policy": "mem1", "budget": 512}}, TrainConfig)
    assert as_string.memory == as_section.memory and as_section.memory.spec == "mem1,budget=512"
    assert validate({"memory": "window(k=3)"}, TrainConfig).memory.build().k == 3
    assert validate({}, TrainConfig).memory.spec == "mem1"
    with pytest.raises(ConfigError, match=r"memory.*unknown memory policy 'mem2'"):
        validate({"memory": {"policy": "mem2"}}, TrainConfig)
    with pytest.raises(ConfigError, match=r"memory.budget = 0.*greater than or equal to 1"):
        validate({"memory": {"policy": "mem1", "budget": 0}}, TrainConfig)
    with pytest.raises(ConfigError, match=r"memory.*mem1.*k"):  # mem1 keeps no window
        validate({"memory": {"policy": "mem1", "k": 2}}, TrainConfig)
