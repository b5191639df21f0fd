"""The RLlib Algorithm for MEM1 training: sample -> learn -> sync weights, each timed.

    algo = build_algorithm_config(train_config, worker_overrides).build_algo()
    result = algo.train()          # one iteration

`training_step`:
1. sample: every env runner plays its share of the iteration's tasks, `group_size` times
   each (experiments/env_runner.py), and returns packed episodes;
2. the driver turns them into one padded batch (policies/columns.py) and, for GRPO, the
   group-normalised advantages (groups are whole here, before any sharding);
3. learn: one `LearnerGroup.update` (policies/learner.py runs epochs, minibatches and
   gradient accumulation inside);
4. sync: the new weights go to every runner's sampler (in place; vLLM keeps its engine).

Metrics are namespaced (`rollout/`, `loss/`, `perf/`, `memory/`) and collected by
`iteration_metrics` from RLlib's result dict for the CLI and MLflow.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any

import numpy as np
import ray
import torch
from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig
from ray.rllib.core import COMPONENT_LEARNER, COMPONENT_RL_MODULE, DEFAULT_MODULE_ID
from ray.rllib.core.rl_module.multi_rl_module import MultiRLModuleSpec
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch
from ray.rllib.utils.annotations import override
from ray.rllib.utils.metrics import (
    ENV_RUNNER_RESULTS,
    EPISODE_RETURN_MEAN,
    LEARNER_RESULTS,
    NUM_ENV_STEPS_SAMPLED_LIFETIME,
)

from policies import columns as C
from policies.learner import Mem1Learner
from policies.losses import grpo_advantages
from policies.packer import episode_token_values, group_token_rewards, pad_columns
from policies.rl_module import CausalLMModule

from .config import SINGLE_AGENT, TrainConfig
from .env_runner import ACTION_SPACE, OBS_SPACE, Mem1EnvRunner
from .faults import SampleTimeoutError


logger = logging.getLogger(__name__)
assert SINGLE_AGENT == DEFAULT_MODULE_ID, "experiments/config.py SINGLE_AGENT must be RLlib's DEFAULT_MODULE_ID"


class Mem1Config(AlgorithmConfig):
    def __init__(self, algo_class=None):
        super().__init__(algo_class=algo_class or Mem1Algorithm)
        self.mem1: dict[str, Any] = {}  # the validated TrainConfig as plain data (travels to Tune)

    @override(AlgorithmConfig)
    def get_default_rl_module_spec(self) -> RLModuleSpec:
        return RLModuleSpec(module_class=CausalLMModule, model_config=self.mem1.get("module", {}))

    @override(AlgorithmConfig)
    def get_default_learner_class(self):
        return Mem1Learner


class Mem1Algorithm(Algorithm):
    @classmethod
    @override(Algorithm)
    def get_default_config(cls) -> Mem1Config:
        return Mem1Config()

    @override(Algorithm)
    def training_step(self) -> None:
        group = self.env_runner_group
        iteration = self.training_iteration
        timings: dict[str, float] = {}

        t0 = time.perf_counter()
        local = group.num_remote_env_runners() == 0
        dispatched = [] if local else group.healthy_env_runner_ids()
        timeout = None if local else self.config.mem1["config"]["training"]["sample_timeout_s"]
        # a runner that dies mid-sample is dropped by RLlib (restart_failed_env_runners) and one
        # that misses the timeout is not waited for: either way its episodes are not in `per_runner`
        per_runner = group.foreach_env_runner(lambda r: (r.worker_index, r.sample(iteration=iteration)),
                                              local_env_runner=local, timeout_seconds=timeout)
        records = [rec for _, out in per_runner for rec in out]
        timings["sample_s"] = time.perf_counter() - t0
        lost = self._lost_runners(dispatched, {index for index, _ in per_runner})
        if not records:
            raise RuntimeError("no episodes came back from the env runners this iteration (all runners failed?)")

        t0 = time.perf_counter()
        batch, rollout = self._train_batch(records)
        lifetime = self.metrics.peek(NUM_ENV_STEPS_SAMPLED_LIFETIME, default=0) + rollout["turns"]
        self.metrics.log_value(NUM_ENV_STEPS_SAMPLED_LIFETIME, rollout["turns"], reduce="lifetime_sum")
        learner_results = self.learner_group.update(
            batch=batch, timesteps={NUM_ENV_STEPS_SAMPLED_LIFETIME: lifetime}, num_epochs=1, minibatch_size=None,
        )
        self.metrics.aggregate(learner_results, key=LEARNER_RESULTS)
        timings["learn_s"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        group.sync_weights(
            from_worker_or_learner_group=self.learner_group, policies=list(self.config.mem1["agents"]), inference_only=True,
            timeout_seconds=600.0,  # wait: the next sample must see the new weights
        )
        timings["sync_s"] = time.perf_counter() - t0

        self.metrics.log_value((ENV_RUNNER_RESULTS, EPISODE_RETURN_MEAN), rollout.pop("return_mean"), window=1)
        rollout.update(lost)
        for k, v in {**rollout, **{f"perf/{k}": v for k, v in timings.items()}}.items():
            self.metrics.log_value(("mem1", k), float(v), window=1)

    @override(Algorithm)
    def restore_env_runners(self, env_runner_group) -> list[int]:
        """A restarted env runner gets the learner's current weights for every agent (on a
        shared engine: their adapters, which it cannot sample without). RLlib's own version
        first edits the runner's MultiRLModule in a multi-agent run, and a Mem1EnvRunner has
        none: its samplers hold the weights."""
        restored = env_runner_group.probe_unhealthy_env_runners() if self.config.is_online else []
        if not restored:
            return []
        self._counters["total_num_restored_workers"] += len(restored)
        state = self.learner_group.get_state(components=f"{COMPONENT_LEARNER}/{COMPONENT_RL_MODULE}", inference_only=True)[COMPONENT_LEARNER]
        state_ref = ray.put(state)
        env_runner_group.foreach_env_runner(lambda runner: runner.set_state(ray.get(state_ref)), remote_worker_ids=restored,
                                            local_env_runner=False, timeout_seconds=self.config.env_runner_restore_timeout_s)
        return restored

    def _lost_runners(self, dispatched: list[int], returned: set[int]) -> dict[str, float]:
        """What the iteration lost: runners that died (RLlib marked them unhealthy and restores
        them, with the learner's weights, before the next iteration) and runners that missed
        training.sample_timeout_s. A late runner is killed so that Ray restarts it and RLlib
        restores it in the same way (left alone, it would go on with a stale sample while the
        next iteration's call queues behind it), or, by config, the run stops here."""
        healthy = set(self.env_runner_group.healthy_env_runner_ids())  # RLlib has marked the dead ones
        died = [i for i in dispatched if i not in returned and i not in healthy]
        late = [i for i in dispatched if i not in returned and i in healthy]
        if late:
            manager = self.env_runner_group._worker_manager  # no public handle on one runner's actor
            for i in late:  # also before stopping: shutting down would wait on a hung runner
                manager.set_actor_state(i, healthy=False)
                ray.kill(manager.actors()[i], no_restart=False)
            training = self.config.mem1["config"]["training"]
            if training["on_sample_timeout"] == "stop":
                raise SampleTimeoutError(f"env runner(s) {late} did not return their episodes within training.sample_timeout_s="
                                         f"{training['sample_timeout_s']} s; the run stops (training.on_sample_timeout=stop)")
        if died or late:
            logger.warning("iteration %d: lost the episodes of env runner(s) %s (died) %s (missed the sample timeout); "
                           "they are restarted with the current weights", self.training_iteration + 1, died, late)
        return {"rollout/env_runners_died": float(len(died)), "rollout/env_runners_timed_out": float(len(late))}

    def _train_batch(self, records: list[dict]) -> tuple[MultiAgentBatch, dict[str, float]]:
        """The learner's batch, one module's columns per agent, and the rollout metrics: as
        they are for one agent, and per agent under `agents/<name>/` for several (with the
        iteration's totals, e.g. turns and sampling speed, unprefixed)."""
        several = len(self.config.mem1["agents"]) > 1
        by_agent: dict[str, list[dict]] = {}
        for r in records:
            by_agent.setdefault(r["agent"], []).append(r)
        columns, rollout = {}, {}
        for agent, mine in by_agent.items():  # GRPO groups are normalised within each agent's records
            columns[agent], metrics = self._agent_columns(mine)
            if several:
                rollout.update({f"agents/{agent}/{k}": v for k, v in metrics.items() if k not in ("turns", "return_mean")})
            else:
                rollout.update(metrics)
        if several:
            totals = _rollout_metrics(records)
            rollout.update({k: totals[k] for k in ("turns", "perf/generated_tokens", "perf/sample_tokens_per_s", "perf/sampler_s", "rollout/episodes")})
            rollout["return_mean"] = float(np.mean([r["return"] for r in records]))
        rows = sum(len(c[C.LOSS_MASK]) for c in columns.values())
        return MultiAgentBatch({agent: SampleBatch(c) for agent, c in columns.items()}, env_steps=rows), rollout

    def _agent_columns(self, records: list[dict]) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        settings = self.config.mem1["config"]
        returns = np.asarray([r["return"] for r in records], dtype=np.float32)
        groups = {g: i for i, g in enumerate(dict.fromkeys(r["group"] for r in records))}
        group_ids = np.asarray([groups[r["group"]] for r in records], dtype=np.int64)
        adv, _ = grpo_advantages(  # per episode, over whole groups (before any sharding)
            torch.from_numpy(returns), torch.from_numpy(group_ids), torch.ones(len(records), 1, dtype=torch.bool),
            scale_by_std=settings["algorithm"]["scale_by_std"],
        )
        rows, members = _rows(records)
        cols = pad_columns(rows)
        b, length = cols[C.INPUT_IDS].shape
        rewards = np.zeros((b, length), dtype=np.float32)
        advantages = np.zeros((b, length), dtype=np.float32)
        for i, (row, idx) in enumerate(zip(rows, members)):
            rewards[i, : row.num_tokens] = group_token_rewards(row, [records[j]["turn_rewards"] for j in idx])
            advantages[i, : row.num_tokens] = episode_token_values(row, adv[idx, 0].numpy())
        cols.update({
            C.TOKEN_REWARDS: rewards,
            C.ADVANTAGES: advantages,
            C.EPISODE_RETURNS: np.asarray([returns[idx].mean() for idx in members], dtype=np.float32),  # per row
            C.GROUP_IDS: np.asarray([group_ids[idx[0]] for idx in members], dtype=np.int64),
        })
        cols = shardable(cols, self.config.num_learners, settings["algorithm"]["minibatches"])
        rollout = _rollout_metrics(records)
        rollout["return_mean"] = float(returns.mean())
        # Groups whose episodes all got the same return have zero GRPO advantage: no policy
        # gradient. A share near 0 means the batch teaches nothing (e.g. a small model that
        # never follows the protocol); more samples, a larger G or reward shaping help.
        if settings["algorithm"]["name"] == "grpo":  # PPO's baseline is the critic: no groups
            spread = [np.ptp(returns[group_ids == g]) > 1e-6 for g in range(len(groups))]
            rollout["rollout/groups_with_signal"] = float(np.mean(spread))
        return cols, rollout


def shardable(cols: dict[str, np.ndarray], num_learners: int, minibatches: int) -> dict[str, np.ndarray]:
    """The batch padded, for several learners, to `num_learners` equal shards of at least
    `minibatches` rows each: RLlib cuts it into contiguous shards of ceil(rows / learners)
    rows, which can leave a learner with too few rows (or none) for its optimizer steps, and
    DDP needs every learner in every step. Padding rows repeat the first row with no loss
    tokens, so they change no gradient, loss or metric."""
    if num_learners <= 1:
        return cols
    rows = len(cols[C.LOSS_MASK])
    target = num_learners * max(-(-rows // num_learners), minibatches)
    pad = np.zeros(target - rows, dtype=np.int64)
    out = {k: np.concatenate([v, v[pad]]) for k, v in cols.items()}
    out[C.LOSS_MASK][rows:] = 0
    return out


def _rows(records: list[dict]) -> tuple[list, list[list[int]]]:
    """The distinct packed rows of the records (a group's episodes share one), in order,
    with the record indices of each row's episodes in the row's episode order."""
    rows: dict[int, tuple[Any, list[int]]] = {}
    for j, r in enumerate(records):
        rows.setdefault(id(r["row"]), (r["row"], []))[1].append(j)
    for row, idx in rows.values():
        idx.sort(key=lambda j: records[j]["row_index"])
    return [row for row, _ in rows.values()], [idx for _, idx in rows.values()]


def _rollout_metrics(records: list[dict]) -> dict[str, float]:
    infos = [r["info"] for r in records]
    mean = lambda key, default=0.0: float(np.mean([i.get(key, default) for i in infos]))
    runners: dict[int, dict[str, dict]] = {}  # each runner's totals once per agent
    for r in records:
        runners.setdefault(r["stats"]["runner"], {})[r["stats"].get("agent")] = r["stats"]
    tokens = sum(s["generated_tokens"] for agents in runners.values() for s in agents.values())
    # Runners sample at the same time (a runner's agents one after the other), so the
    # iteration's sampling lasts as long as its slowest runner: all tokens over that time is
    # the rate of the whole fleet (over the mean time it would be overstated whenever the
    # runners' shares are uneven).
    sample_s = max(sum(s["sample_s"] for s in agents.values()) for agents in runners.values())
    searches = sum(i.get("search_calls", 0) for i in infos)
    search_errors = sum(i.get("search_errors", 0) for i in infos)
    turns = sum(r["turns"] for r in records)
    packed_tokens = sum(row.num_tokens for row in _rows(records)[0])
    out = {
        "rollout/reward": float(np.mean([r["return"] for r in records])),
        "rollout/em": mean("em_mean"),
        "rollout/f1": mean("f1_mean"),
        "rollout/episodes": float(len(records)),
        "rollout/turns_per_episode": turns / len(records),
        "rollout/valid_action_rate": sum(r["valid_turns"] for r in records) / max(turns, 1),
        "rollout/answered": float(np.mean([i.get("end_reason") == "answer" for i in infos])),
        "memory/peak_tokens": mean("peak_tokens"),
        "memory/peak_tokens_max": float(max(i.get("peak_tokens", 0.0) for i in infos)),
        "memory/packed_tokens_per_episode": packed_tokens / len(records),  # a shared prompt counts once per group
        "perf/generated_tokens": float(tokens),
        "perf/sample_tokens_per_s": tokens / sample_s if sample_s else 0.0,
        "perf/sampler_s": sample_s,  # in sampler calls (the slowest runner's): with agents:, each agent's own (shared engine: its token share)
        # failed searches come back as observations: only these show a dead retriever
        "rollout/search_errors": float(search_errors),
        "rollout/search_error_rate": search_errors / searches if searches else 0.0,
        "turns": float(turns),
    }
    if any("success" in i for i in infos):
        out["rollout/success"] = mean("success")
    return out


def build_algorithm_config(config: TrainConfig, worker_overrides: dict[str, Any] | None = None) -> Mem1Config:
    """The RLlib config for a validated TrainConfig. `worker_overrides` point env runners
    at the driver's services (e.g. the retriever URL)."""
    plain = config.model_dump(mode="json")
    for dotted, value in (worker_overrides or {}).items():
        node = plain
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    a, t = config.algorithm, config.training
    module = {
        "model": config.model.name,
        "dtype": config.model.dtype,
        "value_head": a.name == "ppo",
        "reference": a.kl_coef > 0,
        "attention": t.attention,
        "temperature": config.sampler.temperature or 1.0,
        "gradient_checkpointing": t.gradient_checkpointing,
        "trainable_layers": t.trainable_layers,
        "lora": config.model.lora.model_dump() if config.model.lora else None,
        "sync": "adapter" if config.sampler.shared_engine else "weights",  # a shared engine loads adapters only
        "autocast": "bfloat16" if t.num_gpus_per_learner and config.model.dtype == "float32" else None,
    }
    learner = {
        "objective": a.name,
        "clip_low": a.clip_low, "clip_high": a.clip_high,
        "kl_coef": a.kl_coef, "kl_estimator": a.kl_estimator, "kl_mode": a.kl_mode,
        "entropy_coef": a.entropy_coef, "vf_coef": a.vf_coef, "vf_clip": a.vf_clip,
        "gamma": a.gamma, "lam": a.lam, "whiten_advantages": a.whiten_advantages,
        "epochs": a.epochs, "minibatches": a.minibatches, "micro_batch_size": a.micro_batch_size, "seed": config.seed,
    }
    cfg = (
        Mem1Config()
        .environment(env=None, observation_space=OBS_SPACE, action_space=ACTION_SPACE, env_config={"mem1": {"config": plain, "num_runners": t.num_env_runners}})
        .env_runners(
            env_runner_cls=Mem1EnvRunner,
            num_env_runners=t.num_env_runners,
            create_local_env_runner=t.num_env_runners == 0,  # otherwise the driver would load a sampler it never uses
            num_cpus_per_env_runner=t.num_cpus_per_env_runner,
            num_gpus_per_env_runner=t.num_gpus_per_env_runner,
            sample_timeout_s=None,  # LLM rollouts are slow; RLlib's 60 s default drops runners (#63302)
        )
        .learners(num_learners=t.num_learners, num_gpus_per_learner=t.num_gpus_per_learner, learner_config_dict=learner)
        # Several learners: RLlib wraps the module in DDP. The buffers (rotary tables) are
        # equal everywhere, so DDP need not broadcast them at every micro-batch's forward.
        .framework(torch_ddp_kwargs={"broadcast_buffers": False})
        .training(lr=a.lr, grad_clip=a.grad_clip, grad_clip_by="global_norm")
        .debugging(seed=config.seed)
        .fault_tolerance(restart_failed_env_runners=True)
    )
    agents = config.agent_memories()
    if config.agents:
        # one module per agent, each its own weights and optimizer (RLlib's multi-agent API);
        # an agent's own lr is RLlib's per-module config override
        spec = functools.partial(RLModuleSpec, module_class=CausalLMModule, model_config=module, observation_space=OBS_SPACE, action_space=ACTION_SPACE)
        cfg.rl_module(
            rl_module_spec=MultiRLModuleSpec(rl_module_specs={agent: spec() for agent in agents}),
            algorithm_config_overrides_per_module={name: {"lr": agent.lr} for name, agent in config.agents.items() if agent.lr},
        )
        cfg.multi_agent(policies=set(agents), policy_mapping_fn=lambda agent_id, episode, **kw: agent_id)
        # Remote runners only: the driver builds RLlib's default connector pipelines from the
        # placeholder spaces, and their agent-to-module mapping wants gym Dict spaces. Text
        # episodes never pass through connectors, so none are built.
        cfg.env_runners(add_default_connectors_to_env_to_module_pipeline=False, add_default_connectors_to_module_to_env_pipeline=False)
    if a.warmup_iterations:
        cfg.experimental(_torch_lr_scheduler_classes=[functools.partial(torch.optim.lr_scheduler.LambdaLR, lr_lambda=_warmup(a.warmup_iterations))])
    cfg.mem1 = {"config": plain, "module": module, "agents": list(agents)}
    return cfg


def _warmup(steps: int):
    return lambda step: min(1.0, (step + 1) / steps)


def iteration_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The metrics of one `algo.train()` result, with stable namespaced names (a multi-agent
    run's learner metrics under `agents/<name>/`, as its rollout metrics)."""
    out = {k: float(v) for k, v in result.get("mem1", {}).items() if k != "turns"}
    learners = result.get(LEARNER_RESULTS, {})
    names = {
        "policy_loss": "loss/policy", "entropy": "loss/entropy", "clipfrac": "loss/clipfrac", "approx_kl": "loss/approx_kl",
        "kl": "loss/kl_ref", "value_loss": "loss/value", "explained_variance": "loss/explained_variance",
        "rollout_logp_mismatch": "rollout/logp_mismatch",
        "rollout_logp_mismatch_max": "rollout/logp_mismatch_max", "ref_kl": "loss/ref_kl_before_update",
        "total_loss": "loss/total", "gradients_default_optimizer_global_norm": "loss/grad_norm",
        "default_optimizer_learning_rate": "loss/lr",
    }
    for module_id, learner in learners.items():
        if not isinstance(learner, dict) or not any(k in learner for k in names):
            continue  # RLlib's own entries (all modules, counters)
        prefix = "" if module_id == DEFAULT_MODULE_ID else f"agents/{module_id}/"
        for k, name in names.items():
            if k in learner:
                out[prefix + name] = float(learner[k])
    return out
