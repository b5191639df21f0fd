"""Memory scaling: peak tokens per model call against the number of objectives N, per memory
policy, with the default model or a trained one (--model). The claim under test (docs/method.md; the
paper's Fig. 1): MEM1's peak stays nearly flat as N grows while a full-context agent's grows
with N. Headline targets (HEADLINE TARGETS below; each check reports value, target, met):

    (a) mem1 peak(N=16) <= 1.3 x mem1 peak(N=2)   (paper: 6.40 -> 10.4 hundred tokens, 1.63x;
        N=2 is the base when it was run, else the smallest N; N=16 the top, else the largest N)
    (b) full_context peak >= 4 x mem1 peak at the largest N both ran   (paper: 3.7x)
    (c) mem1 valid-action rate >= 0.8 at every N

    python -m experiments.bench.memory_scaling                       # N = 1..16, 2 tasks per N, vLLM
    python -m experiments.bench.memory_scaling --n 1 2 4 8 12 16 --tasks-per-n 2 --backend transformers
    python -m experiments.bench.memory_scaling --model runs/<train-run>/model --out experiments/bench/results/memory_scaling_trained.json

It runs the ordinary evaluation (experiments.evaluate.evaluate) on experiments/configs/eval_qa.yaml
with overrides (the same as `mem1 eval experiments/configs/eval_qa.yaml -o ...`, printed in the
result), for mem1, full_context, window(k=2), summary and amem(k=3) (the last two write their
memory in calls of their own, which count as calls here), greedy, and writes
experiments/bench/results/memory_scaling.json: per policy and N the mean and max peak tokens
(context + generated tokens of one call, the paper's memory proxy), mean tokens per call,
turns, prompt tokens, the peak beyond the prompt, the valid-action rate, and the peak call's
breakdown ("peak_call": prompt, state, action, observation and generated tokens of each
episode's largest call, averaged over the tasks); the headline checks; the model (name or
folder, and whether it is the config's untrained default), the machine, the package versions,
the exact command and the wall time. The run folder (episodes, plots, MLflow store) goes under
runs/bench/.

What makes the comparison fair (details in the result's "notes", written from the config at
run time): every policy plays the same tasks with the same model and greedy sampler, so
policies differ only in what they keep in context; the prompt (chat template, instructions,
the few-shot demonstration when env.few_shot is on) is shared by all N, and only the question
list grows with N, which the prompt-token column shows separately.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shlex
import statistics
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Sequence

from experiments.bench import RESULTS_DIR, command_line, machine_info, package_versions, write_json

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "eval_qa.yaml"
POLICIES = ("mem1", "full_context", "window(k=2)", "summary", "amem(k=3)")

# HEADLINE TARGETS (the issue), checked in headline(). A missed target is reported as missed.
MEM1_BASE_N, MEM1_TOP_N = 2, 16  # (a) compares mem1's peak at these N (fallbacks: smallest / largest N run)
MEM1_PEAK_RATIO_MAX = 1.3  # (a) mem1 peak(N=16) / peak(N=2); the paper has 10.4 / 6.40 = 1.63
FULL_OVER_MEM1_MIN = 4.0  # (b) full_context peak / mem1 peak at the largest N; the paper has 3.7
MEM1_VALID_RATE_MIN = 0.8  # (c) mem1 valid-action rate, at every N

# The peak call's token breakdown (per_policy[policy][N]["peak_call"]); "other" holds segment
# kinds none of the benchmarked policies write (e.g. a separately written summary), so that
# total is always the sum of the parts.
PEAK_PARTS = ("prompt", "state", "action", "observation", "other", "generated")

log = logging.getLogger(__name__)


def build_config(
    n_values: Sequence[int],
    tasks_per_n: int,
    backend: str,
    output_dir: Path,
    max_turns_cap: int | None,
    policies: Sequence[str],
    model: str | None = None,
    max_new_tokens: int | None = None,
):
    """eval_qa.yaml plus the benchmark's overrides, validated like any `mem1 eval` config.
    `model` / `max_new_tokens` None keep eval_qa.yaml's values (no override)."""
    from experiments.config import EvalConfig, load_config

    overrides = [
        "name=memory_scaling",
        f"output_dir={output_dir}",
        f"policies={json.dumps(list(policies))}",
        f"data.n_values={json.dumps(sorted(set(n_values)))}",
        f"data.tasks_per_n={tasks_per_n}",
        f"sampler.backend={backend}",
        "sampler.temperature=0.0",  # greedy: the peaks are a function of the tasks, not of luck
    ]
    if model is not None:
        overrides.append(f"model.name={json.dumps(model)}")  # quoted: overrides are YAML scalars, a name like 2024 or yes must stay a string
    if max_new_tokens is not None:
        overrides.append(f"sampler.max_new_tokens={max_new_tokens}")
    if max_turns_cap is not None:
        overrides.append(f"env.max_turns_cap={max_turns_cap}")
    return load_config(CONFIG, EvalConfig, overrides), overrides


def equivalent_eval(overrides: Sequence[str]) -> str:
    """The `mem1 eval` command that runs the same evaluation (shell-quoted: paths may hold spaces)."""
    return shlex.join(["mem1", "eval", "experiments/configs/eval_qa.yaml", *(x for o in overrides for x in ("-o", o))])


def _is_base_model(name: str, base: str) -> bool:
    """Whether `name` is the config's default model: the same name, or a folder that is its
    converted copy (resolve_model turns the bundled alias into a cached folder)."""
    if name == base:
        return True
    if not Path(name).is_dir():
        return False
    from policies.models import resolve_model

    try:
        return Path(name).resolve() == Path(resolve_model(base)).resolve()
    except (OSError, ValueError):  # the default cannot be resolved here: then it is not this folder
        return False


def _calls(ep) -> list[tuple[int, int]]:
    """(context tokens, generated tokens) of every model call of an episode."""
    from policies.records import turn_tokens

    return [(c.context, c.generated) for c in turn_tokens(ep)]


def peak_call(ep) -> dict[str, int]:
    """Token breakdown of an episode's peak call (the first call with the largest context +
    generated tokens, as memory_metrics' peak_tokens): its context by segment kind, with each
    earlier generated segment split into internal state and action, plus what it generated.
    total = the sum of the parts = that call's context + generated tokens."""
    from policies.records import GENERATED, OBSERVATION, PROMPT, turn_tokens

    parts = dict.fromkeys(PEAK_PARTS, 0)
    calls = turn_tokens(ep)
    if not calls:  # no call was made (the prompt alone overflowed): peak 0, as memory_metrics has it
        return {**parts, "total": 0}
    i = max(range(len(calls)), key=lambda j: calls[j].total)  # max() keeps the first of equal peaks
    writer = {t.generated: t for t in ep.turns}  # generated segment -> the turn that wrote it
    for ref in ep.turns[i].context:
        kind = ep.segments[ref.segment].kind
        start, stop = ref.bounds(ep.segments)
        if kind == GENERATED:
            # Exact and tokenizer-free: the rollout stored the <think>...</think> block (tags
            # included) as Turn.state_span, token offsets into this segment (the env's character
            # span mapped by prefix decodes, ChatFormat.char_to_token). A ref may be a slice
            # (budget=), so count its overlap with the span; no closed <think> block: all action.
            span = writer[ref.segment].state_span if ref.segment in writer else None
            state = max(0, min(stop, span[1]) - max(start, span[0])) if span else 0
            parts["state"] += state
            parts["action"] += stop - start - state
        elif kind == PROMPT:
            parts["prompt"] += stop - start
        elif kind == OBSERVATION:  # with the chat template's wrapping of the observation
            parts["observation"] += stop - start
        else:
            parts["other"] += stop - start
    parts["generated"] = calls[i].generated
    return {**parts, "total": sum(parts.values())}


def summarise(episodes) -> dict[str, dict[str, dict[str, Any]]]:
    """Per policy and N: peak / mean tokens per call, the peak call's breakdown, turns, prompt
    tokens, scores."""
    from policies.records import action_turns, valid_action_rate

    groups: dict[tuple[str, int], list] = defaultdict(list)
    for ep in episodes:
        groups[(ep.info["policy"], int(ep.info["n"]))].append(ep)
    out: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for (policy, n), eps in sorted(groups.items(), key=lambda kv: (POLICIES.index(kv[0][0]) if kv[0][0] in POLICIES else 99, kv[0][1])):
        peaks = [float(ep.info.get("peak_tokens", 0.0)) for ep in eps]
        calls = [c for ep in eps for c in _calls(ep)]
        prompts = [len(ep.segments[0]) for ep in eps]
        beyond = [max((ctx + gen - len(ep.segments[0]) for ctx, gen in _calls(ep)), default=0) for ep in eps]
        breakdowns = [peak_call(ep) for ep in eps]
        out[policy][str(n)] = {
            "episodes": len(eps),
            "peak_tokens_mean": statistics.fmean(peaks),
            "peak_tokens_max": max(peaks),
            # means over the tasks of each part; total equals peak_tokens_mean (up to float rounding)
            "peak_call": {k: statistics.fmean(b[k] for b in breakdowns) for k in (*PEAK_PARTS, "total")},
            "mean_tokens_per_call": statistics.fmean(ctx + gen for ctx, gen in calls) if calls else 0.0,
            "calls": len(calls),
            "turns_mean": statistics.fmean(len(action_turns(ep)) for ep in eps),
            "max_turns": max(int(ep.info.get("max_turns", 0)) for ep in eps),
            "prompt_tokens_mean": statistics.fmean(prompts),
            "peak_beyond_prompt_mean": statistics.fmean(beyond),
            "peak_context_tokens_mean": statistics.fmean(float(ep.info.get("peak_context_tokens", 0.0)) for ep in eps),
            "generated_tokens_per_call": statistics.fmean(gen for _, gen in calls) if calls else 0.0,
            "em_mean": statistics.fmean(float(ep.info.get("em_mean", 0.0)) for ep in eps),
            # per episode (valid turns / turns), then averaged over the tasks, as report.py's rollout/valid_action_rate
            "valid_action_rate": statistics.fmean(valid_action_rate(ep) for ep in eps),
            "end_reasons": dict(Counter(str(ep.info.get("end_reason")) for ep in eps)),
        }
    return dict(out)


def _check(value: float | None, op: str, target: float, **detail: Any) -> dict[str, Any]:
    """One headline check. met is None only when the value could not be measured (the policy
    or the N values it needs were not run; `reason` says which), never to soften a miss."""
    met = None if value is None else (value <= target if op == "<=" else value >= target)
    if value is None:
        detail.setdefault("reason", "the denominator is 0 (no model call at that N)")
    return {"value": None if value is None else round(value, 4), "target": target, "op": op, "met": met, **detail}


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def headline(per_policy: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """The three headline checks (HEADLINE TARGETS above), plus the numbers that explain them."""
    mem1, full = per_policy.get("mem1"), per_policy.get("full_context")
    checks: dict[str, dict[str, Any]] = {}
    out: dict[str, Any] = {
        "targets": {
            "mem1_peak_ratio": f"mem1 peak(N={MEM1_TOP_N}) <= {MEM1_PEAK_RATIO_MAX} x mem1 peak(N={MEM1_BASE_N}) (paper: 1.63x)",
            "full_over_mem1": f"full_context peak >= {FULL_OVER_MEM1_MIN} x mem1 peak at the largest N (paper: 3.7x)",
            "mem1_valid_action_rate": f"mem1 valid-action rate >= {MEM1_VALID_RATE_MIN} at every N",
        },
        "checks": checks,
    }

    # (a) mem1's peak stays flat: mean peak over the tasks at the top N / at the base N
    if not mem1:
        checks["mem1_peak_ratio"] = _check(None, "<=", MEM1_PEAK_RATIO_MAX, reason="mem1 was not run")
    else:
        ns = sorted(mem1, key=int)
        base = str(MEM1_BASE_N) if str(MEM1_BASE_N) in mem1 else ns[0]
        top = str(MEM1_TOP_N) if str(MEM1_TOP_N) in mem1 else ns[-1]
        detail: dict[str, Any] = {
            "n_base": int(base),
            "n_top": int(top),
            "base": f"N={base}" if base == str(MEM1_BASE_N) else f"smallest N run, N={base} (N={MEM1_BASE_N} was not run)",
            "top": f"N={top}" if top == str(MEM1_TOP_N) else f"largest N run, N={top} (N={MEM1_TOP_N} was not run)",
        }
        if int(top) <= int(base):
            checks["mem1_peak_ratio"] = _check(None, "<=", MEM1_PEAK_RATIO_MAX, **detail, reason="needs a larger N than the base")
        else:
            lo, hi = mem1[base], mem1[top]
            checks["mem1_peak_ratio"] = _check(_ratio(hi["peak_tokens_mean"], lo["peak_tokens_mean"]), "<=", MEM1_PEAK_RATIO_MAX, **detail)
            out["mem1"] = {
                "peak_ratio_of_max": round(hi["peak_tokens_max"] / lo["peak_tokens_max"], 4) if lo["peak_tokens_max"] else None,
                "peak_beyond_prompt_ratio": round(hi["peak_beyond_prompt_mean"] / max(lo["peak_beyond_prompt_mean"], 1.0), 4),
                "prompt_tokens_ratio": round(hi["prompt_tokens_mean"] / lo["prompt_tokens_mean"], 4) if lo["prompt_tokens_mean"] else None,
                "peak_call_at_base": lo["peak_call"],
                "peak_call_at_top": hi["peak_call"],
            }
        out.setdefault("mem1", {})["peak_tokens_by_n"] = {n: round(mem1[n]["peak_tokens_mean"], 1) for n in ns}

    # (b) full context costs more memory than mem1 at the largest N both ran
    common = sorted(set(mem1 or {}) & set(full or {}), key=int)
    if not common:
        checks["full_over_mem1"] = _check(None, ">=", FULL_OVER_MEM1_MIN, reason="needs mem1 and full_context at a common N")
    else:
        n = common[-1]
        checks["full_over_mem1"] = _check(_ratio(full[n]["peak_tokens_mean"], mem1[n]["peak_tokens_mean"]), ">=", FULL_OVER_MEM1_MIN, n=int(n))

    # (c) mem1's turns follow the protocol: the worst N decides
    if not mem1:
        checks["mem1_valid_action_rate"] = _check(None, ">=", MEM1_VALID_RATE_MIN, reason="mem1 was not run")
    else:
        rates = {n: mem1[n]["valid_action_rate"] for n in sorted(mem1, key=int)}
        worst = min(rates, key=rates.get)
        checks["mem1_valid_action_rate"] = _check(rates[worst], ">=", MEM1_VALID_RATE_MIN, worst_n=int(worst),
                                                  by_n={n: round(r, 4) for n, r in rates.items()})

    if full:
        ns = sorted(full, key=int)
        peaks = [full[n]["peak_tokens_mean"] for n in ns]
        out["full_context"] = {
            "grows_with_n": peaks[-1] > peaks[0],
            "monotone_non_decreasing": all(b >= a for a, b in zip(peaks, peaks[1:])),
            "peak_ratio": round(peaks[-1] / peaks[0], 4) if peaks[0] else None,
            "peak_tokens_by_n": {n: round(p, 1) for n, p in zip(ns, peaks)},
        }
    met = [c["met"] for c in checks.values()]
    out["all_met"] = False if False in met else (None if None in met else True)
    return out


def notes(config, model_is_base: bool) -> list[str]:
    """What the numbers mean and what bounds them, with every number taken from `config`."""
    env, sampler, data = config.env, config.sampler, config.data
    gen = sampler.max_new_tokens
    if env.max_turns is not None:
        budget = f"Turn budget: fixed at env.max_turns = {env.max_turns} turns at every N."
    else:
        n_max = max(data.n_values)
        budget = (f"Turn budget: base_turns + turns_per_objective x N = {env.base_turns} + {env.turns_per_objective}N as "
                  f"configured")
        if env.max_turns_cap is None:
            budget += f", uncapped: N={n_max} gets {env.base_turns + env.turns_per_objective * n_max} turns."
        else:
            first = max(1, math.ceil((env.max_turns_cap - env.base_turns) / env.turns_per_objective)) if env.turns_per_objective else None
            budget += (f", capped by env.max_turns_cap = {env.max_turns_cap} (--max-turns-cap)"
                       + (f", i.e. N >= {first} all get {env.max_turns_cap} turns" if first else "")
                       + f"; without the cap N={n_max} would get {env.base_turns + env.turns_per_objective * n_max} turns "
                       f"and a full-context episode could approach sampler.max_model_len ({sampler.max_model_len}). With the cap, "
                       "full context still grows with N through the question list and through the number of turns the "
                       "model uses (more questions, more searches), which 'turns_mean' shows.")
    if data.source == "world":
        tasks = (f"Tasks of each N are entity-disjoint questions from the generated world's {data.split} split "
                 f"(world_seed {data.world_seed}, composition seed {data.seed}).")
    else:
        tasks = f"Tasks of each N are composed from {data.source} (split {data.split}, composition seed {data.seed})."
    demo = ("and the few-shot demonstration (env.few_shot: true)" if env.few_shot
            else "(no few-shot demonstration: env.few_shot: false)")
    model = (f"Model: {config.model.name}, " + ("the config's untrained default model." if model_is_base
             else "not the config's default (e.g. a fine-tuned policy); compare it with a base-model result taken the same way."))
    return [
        "Peak tokens = max over an episode's model calls of (context tokens + generated tokens), the memory proxy of "
        "the MEM1 paper; 'mean' averages it over the tasks of one (policy, N), 'max' is the largest over those tasks.",
        model,
        f"Same tasks, same model, same sampler (temperature {sampler.temperature}) for every policy: the policies differ only "
        "in what the context keeps. " + tasks,
        f"The prompt is shared by all N except for the question list: chat template and instructions {demo} are the same "
        "tokens at every N; 'prompt_tokens_mean' shows the part that grows with N and 'peak_beyond_prompt_mean' what the "
        "memory policy adds on top of the prompt. The headline ratios use the whole peak (prompt included), as the paper does.",
        "'peak_call' splits each episode's peak call (its first call with the largest context + generated tokens) and "
        "averages the parts over the tasks: prompt (segment 0, chat template included), state (the <think>...</think> "
        "blocks, tags included, of earlier turns in that context: under mem1 the previous turn's internal state), action "
        "(the rest of those earlier turns: <search>/<answer> and anything around them), observation (the <information> "
        "segments in context: search results, or the env's correction after a malformed turn, with their "
        "chat-template wrapping), generated (that call's own output); total = their sum "
        "= peak_tokens_mean (up to float rounding). State and action are split at the token offsets the rollout recorded (Turn.state_span).",
        f"Generated tokens per call are capped by sampler.max_new_tokens = {gen}, so mem1's peak is bounded by "
        f"prompt + 2 x {gen} + one observation at any N; full context adds every turn until the episode ends.",
        budget,
        "An episode ends at an answer, at the turn budget, or when its next context would not fit max_model_len "
        "('end_reasons'); a model that answers at its first turn has a peak of prompt + one generation, so small N with "
        "early answers give a lower base for the ratio. Both are reported as measured, not adjusted.",
        "valid_action_rate: per episode the share of turns the env accepted as well-formed, averaged over the tasks.",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=list(range(1, 17)), help="objective counts N (default 1..16)")
    parser.add_argument("--tasks-per-n", type=int, default=2, help="tasks per N, played by every policy (default 2)")
    parser.add_argument("--backend", choices=["vllm", "transformers"], default="vllm", help="sampler backend (default vllm)")
    parser.add_argument("--model", default=None, metavar="PATH_OR_NAME",
                        help="model.name for the evaluation: a trained folder (runs/<train-run>/model), hub id or bundled alias "
                             "(default: eval_qa.yaml's model.name, the untrained default model)")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="sampler.max_new_tokens (default: eval_qa.yaml's)")
    parser.add_argument("--max-turns-cap", type=int, default=12, help="env.max_turns_cap (default 12; eval_qa.yaml has its own, used by the main job)")
    parser.add_argument("--policies", nargs="+", default=list(POLICIES))
    parser.add_argument("--output-dir", type=Path, default=Path("runs/bench"), help="where the evaluation run folder goes")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "memory_scaling.json", help="the result JSON")
    parser.add_argument("--notes", default="", help="a remark to store with the result (e.g. why N was reduced)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    from experiments.config import EvalConfig, load_config
    from experiments.evaluate import evaluate
    from policies.models import model_info

    t0 = time.perf_counter()
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    machine_at_start = machine_info()
    config, overrides = build_config(args.n, args.tasks_per_n, args.backend, args.output_dir, args.max_turns_cap, args.policies,
                                     model=args.model, max_new_tokens=args.max_new_tokens)
    base_model = load_config(CONFIG, EvalConfig).model.name  # the untrained default, whatever --model says
    is_base = _is_base_model(config.model.name, base_model)
    result = evaluate(config)
    wall = time.perf_counter() - t0

    per_policy = summarise(result.episodes)
    run_summary = json.loads((result.run_dir / "summary.json").read_text())
    data = {
        "benchmark": "memory_scaling",
        "started": started,
        "command": command_line("experiments.bench.memory_scaling", argv),
        "equivalent_eval": equivalent_eval(overrides),
        "wall_s": round(wall, 1),
        "headline": headline(per_policy),
        "per_policy": per_policy,
        "settings": {
            "model": {"name": config.model.name, "base": is_base, "config_default": base_model},
            "policies": list(config.policies),
            "n_values": list(config.data.n_values),
            "tasks_per_n": config.data.tasks_per_n,
            "backend": args.backend,
            "temperature": config.sampler.temperature,
            "max_new_tokens": config.sampler.max_new_tokens,
            "max_model_len": config.sampler.max_model_len,
            "turn_budget": (f"fixed at {config.env.max_turns}" if config.env.max_turns is not None else
                            f"{config.env.base_turns} + {config.env.turns_per_objective} x N, capped at {config.env.max_turns_cap}"),
            "few_shot": config.env.few_shot,
            "topk": config.env.topk,
            "world": f"seed {config.data.world_seed}, size {config.data.world_size}, split {config.data.split}",
        },
        "throughput": {k: run_summary.get(k) for k in ("generated_tokens", "tokens_per_s", "sample_s", "env_s", "sampler_calls")},
        "model": model_info(config.model.name),
        "versions": package_versions(),
        "machine": {**machine_at_start, "load_avg_at_end": machine_info().get("load_avg_1_5_15")},
        "run_dir": str(result.run_dir),
        "mlflow": {"tracking_uri": result.tracking_uri, "run_id": result.mlflow_run_id},
        "notes": ([args.notes] if args.notes else []) + notes(config, is_base),
    }
    path = write_json(args.out, data)
    print(json.dumps(data["headline"], indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
