"""Reliability: faults injected into the stack, and what survived them. Each section is one
kind of fault; the result is experiments/bench/results/reliability.json:

    {"benchmark": "reliability", "sections": {"retriever_load": {...}, "fuzz": {...}}, "machine": ..., ...}

    python -m experiments.bench.reliability                          # every section
    python -m experiments.bench.reliability --only retriever_load    # one; the file's other sections are kept
    python -m experiments.bench.reliability --clients 1 8 32 --duration 10 --fuzz-scale 1

Sections:
- `retriever_load`: the Search-R1 server on 127.0.0.1 (the generated world's BM25 index)
  under concurrent clients for a bounded time, at each `--clients` count: requests, errors,
  p50/p99/max latency at the client, requests/s; among them, requests over every limit
  (body size declared and chunked, queries, topk, query length), each of which must get its
  4xx naming the field; after the load each is sent once more and a normal search must
  still be answered.
- `fuzz`: 10^4 fuzzed model outputs (tests/envs/fuzzing.py: random, truncated, nested and
  repeated tags, tag variants, huge strings, control characters, invalid UTF-8, junk
  WebShop commands) through the protocol parser and each env's step, against the real
  servers: exceptions and malformed results per env. `--fuzz-scale` multiplies the
  examples (hypothesis, seeded: the same outputs every run).

Every section reports `faults_injected`, `survived`, `episodes_lost` and
`episodes_double_counted` where they apply, its checks (value, target, met) and `met`. A
new fault (an env runner killed, a hung runner, the retriever down, training killed and
resumed) is one more function under `@section("name")` returning such a dict.
- `env_runner_faults`: two env runners, one killed mid-sample, one hung past the sample
  timeout: episodes lost and double-counted per iteration, recovery.
- `train_kill_resume`: training killed with SIGKILL between checkpoints, then `--resume`:
  metric steps logged twice (MLflow, metrics.jsonl), optimizer steps, the run continued.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

from experiments.bench import RESULTS_DIR, command_line, machine_info, measured, package_versions, write_json

SECTIONS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {}


def section(name: str):
    """Register a section: a function (parsed args) -> its figures."""

    def register(fn):
        SECTIONS[name] = fn
        return fn

    return register


def check(value: Any, target: Any, op: str = "==") -> dict[str, Any]:
    met = value == target if op == "==" else value >= target
    return {"value": value, "target": target, "op": op, "met": bool(met)}


@section("retriever_load")
def retriever_load(args: argparse.Namespace) -> dict[str, Any]:
    from envs.data import generate_world
    from envs.retrieval import HttpRetriever, start_server_process
    from tests.envs.retrieval.load import LOAD_LIMITS, check_rejection, limit_args, rejections, run_load

    world = generate_world(0)
    queries = [item.question for item in world.items]
    with tempfile.TemporaryDirectory(prefix="mem1-reliability-") as folder:
        corpus = world.write(folder).corpus
        with start_server_process(corpus, "bm25", port=0, timeout=300, extra_args=limit_args(LOAD_LIMITS)) as server:
            warm = HttpRetriever(server.url, timeout=10, retries=0)
            warm.search(queries[:8], 3)  # the first search loads what the index needs
            runs = []
            for clients in args.clients:
                result = run_load(server.url, clients=clients, duration_s=args.duration, queries=queries, limits=LOAD_LIMITS)
                runs.append(result.summary())
                print(json.dumps({"section": "retriever_load", **{k: v for k, v in runs[-1].items() if k != "first_errors"}}))
            after = {name: check_rejection(server.url, name, LOAD_LIMITS) or "ok" for name in rejections(LOAD_LIMITS)}
            served_after = bool(warm.search([queries[0]], 3)[0]) and server.alive
            warm.close()
    injected = sum(sum(r["rejected_under_load"].values()) + r["rejection_failures"] for r in runs) + len(after)
    refused = sum(sum(r["rejected_under_load"].values()) for r in runs) + sum(v == "ok" for v in after.values())
    checks = {
        "errors": check(sum(r["errors"] for r in runs), 0),
        "bad_requests_not_refused": check(injected - refused, 0),
        "served_after": check(served_after, True),
    }
    return {
        "index": f"bm25 over the generated world (seed 0, {len(world.documents)} passages)",
        "limits": {k: getattr(LOAD_LIMITS, k) for k in ("max_queries", "max_query_chars", "max_topk", "max_body_bytes")},
        "runs": runs,
        "after_load": after,
        "served_after": served_after,
        "faults_injected": injected,
        "survived": refused,
        "checks": checks,
        "met": all(c["met"] for c in checks.values()),
        "note": "latency is measured at the client (one-query searches, topk 3, Python threads sharing the cores "
                "with the server); a request over a limit is refused before any search",
    }


def _fuzz(name: str, examples: int, run_one: Callable[[Any], int], strategy) -> dict[str, Any]:
    """Run `run_one` on `examples` seeded draws, counting instead of raising."""
    from hypothesis import given

    from tests.envs.fuzzing import EnvStepError, fuzz_settings

    counts: Counter[str] = Counter()
    failures: list[str] = []

    @fuzz_settings(examples)
    @given(strategy)
    def one(drawn):
        try:
            counts["outputs"] += run_one(drawn)
        except EnvStepError as e:
            counts["exceptions"] += 1
            failures.append(str(e)[:500])
        except AssertionError as e:
            counts["malformed"] += 1
            failures.append(f"{name}: malformed result: {str(e)[:400]}")
        counts["examples"] += 1

    start = time.perf_counter()
    one()
    out = {"examples": counts["examples"], "outputs": counts["outputs"], "exceptions": counts["exceptions"],
           "malformed": counts["malformed"], "wall_s": round(time.perf_counter() - start, 1), "first_failures": failures[:5]}
    print(json.dumps({"section": "fuzz", "target": name, **{k: v for k, v in out.items() if k != "first_failures"}}))
    return out


@section("fuzz")
def fuzz(args: argparse.Namespace) -> dict[str, Any]:
    from contextlib import ExitStack

    from hypothesis import strategies as st

    from envs.data import generate_world
    from envs.protocol import parse_turn
    from tests.envs.fuzzing import (
        FUZZ_EXAMPLES, EnvStepError, check_parsed, parser_inputs, play, qa_target, toy_target, webqa_target, webshop_target,
    )

    def n(key: str) -> int:
        return max(1, round(FUZZ_EXAMPLES[key] * args.fuzz_scale))

    def parse_one(inputs) -> int:
        text, actions, require_state = inputs
        try:
            parse_turn(text, actions, require_state=require_state)
        except Exception as e:  # the parser itself raised (counted apart from an inconsistent result)
            raise EnvStepError(f"parser: {type(e).__name__}: {e} on {text[:300]!r}") from e
        check_parsed(text, actions, require_state)
        return 1

    per_target = {"parser": _fuzz("parser", n("parser"), parse_one, parser_inputs())}
    world = generate_world(0, "small")
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="mem1-fuzz-") as folder:
        targets = [
            (stack.enter_context(qa_target(world, folder)), n("qa")),
            (stack.enter_context(webqa_target(world, "searxng")), n("webqa")),
            (stack.enter_context(webqa_target(world, "serper")), n("webqa")),
            (webshop_target(), n("webshop")),
            (toy_target(), n("toy")),
        ]
        for target, examples in targets:
            per_target[target.name] = _fuzz(target.name, examples, lambda data, t=target: play(t, data.draw), st.data())
    total = {k: sum(v[k] for v in per_target.values()) for k in ("examples", "outputs", "exceptions", "malformed")}
    lost = sum(v["exceptions"] for k, v in per_target.items() if k != "parser")
    checks = {"exceptions": check(total["exceptions"], 0), "malformed": check(total["malformed"], 0),
              "examples": check(total["examples"], round(10_000 * args.fuzz_scale), ">=")}
    return {
        "per_target": per_target,
        **total,
        # every fuzzed output is a fault; an env exception would end its episode (the rollout records env_error)
        "faults_injected": total["outputs"],
        "survived": total["outputs"] - total["exceptions"] - total["malformed"],
        "episodes_lost": lost,
        "checks": checks,
        "met": all(c["met"] for c in checks.values()),
        "note": "parser: one output per example; env targets: one fuzzed episode per example (up to 5-6 turns, "
                "fewer when the env ends it), outputs = turns stepped",
    }


def _char_model(folder: str) -> str:
    from policies.models import build_char_tokenizer, build_tiny_model

    build_tiny_model(build_char_tokenizer(), seed=0, save_to=folder)
    return folder


@section("env_runner_faults")
def env_runner_faults(args: argparse.Namespace) -> dict[str, Any]:
    """Two env runners on a local Ray cluster (the tiny character model, the toy env): one
    killed mid-sample, later one hung past training.sample_timeout_s (the scenario of
    tests/experiments/test_faults.py)."""
    import ray

    from tests.experiments.test_faults import dead_and_hung_runner

    with tempfile.TemporaryDirectory(prefix="mem1-runner-faults-") as folder:
        ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False, configure_logging=False, namespace="mem1-bench")
        try:
            h, frozen = dead_and_hung_runner(_char_model(f"{folder}/model"), Path(folder))
        finally:
            ray.shutdown()
    full = h[1]["rollout/episodes"]
    iterations = [{"iteration": i, "episodes": m["rollout/episodes"], "died": m["rollout/env_runners_died"],
                   "timed_out": m["rollout/env_runners_timed_out"], "sample_s": round(m["perf/sample_s"], 2),
                   "logp_mismatch_max": m["rollout/logp_mismatch_max"]} for i, m in sorted(h.items())]
    lost = sum(full - it["episodes"] for it in iterations)
    double = sum(max(0, it["episodes"] - full) for it in iterations)
    checks = {"iterations_finished": check(len(iterations), 5), "double_counted": check(double, 0),
              "recovered_by_iteration_4": check([it["episodes"] for it in iterations[3:]], [full, full]),
              "hung_wait_s": check(iterations[2]["sample_s"], 10.0, ">=")}
    return {"faults_injected": 2, "survived": 2 if len(iterations) == 5 else 0, "episodes_lost": lost, "episodes_double_counted": double,
            "episodes_per_iteration": full, "sample_timeout_s": 10.0, "iterations": iterations, "checks": checks,
            "met": all(c["met"] for c in checks.values()),
            "note": "iteration 2: a runner killed with its sample call in flight; iteration 3: a runner hung (SIGSTOP); "
                    "the test waits between iterations until Ray has restarted the lost runner (tens of seconds here)"}


@section("train_kill_resume")
def train_kill_resume(args: argparse.Namespace) -> dict[str, Any]:
    """`mem1 train` (tiny model, toy env, 6 iterations, checkpoints every 2) killed with SIGKILL
    after iteration 3, then resumed (the scenario of tests/experiments/test_faults.py)."""
    from tests.experiments.test_faults import kill_and_resume

    with tempfile.TemporaryDirectory(prefix="mem1-kill-resume-") as folder:
        r = kill_and_resume(_char_model(f"{folder}/model"), Path(folder))
    logged_twice = sum(len(steps) - len(set(steps)) for steps in r["mlflow_steps"].values())
    checks = {"metrics_file": check(r["metrics_file_iterations"], [1, 2, 3, 4, 5, 6]), "mlflow_steps_logged_twice": check(logged_twice, 0),
              "same_run": check(r["same_run"], True), "optimizer_steps": check(r["optimizer_steps"], 6),
              "changed_config_refused": check(r["changed_config_refused"] is not None, True)}
    return {"faults_injected": 1, "survived": int(r["same_run"] and r["mlflow_status"] == "FINISHED"),
            "iterations_rerun": [i for i in r["iterations_at_kill"] if i > int(r["checkpoints_at_kill"][-1].removeprefix("iter_"))],
            "episodes_double_counted": logged_twice, **r, "checks": checks, "met": all(c["met"] for c in checks.values())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=sorted(SECTIONS), default=None, help="run these sections (default: all)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32], help="retriever_load: concurrent clients per run")
    parser.add_argument("--duration", type=float, default=10.0, help="retriever_load: seconds per run")
    parser.add_argument("--fuzz-scale", type=float, default=1.0, help="fuzz: multiplies the 10^4 examples")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "reliability.json", help="the result JSON")
    args = parser.parse_args(argv)
    if any(c < 1 for c in args.clients) or args.duration <= 0 or args.fuzz_scale <= 0:
        parser.error("--clients must be >= 1, --duration and --fuzz-scale > 0")

    data = json.loads(args.out.read_text()) if args.out.exists() else {}
    data.setdefault("benchmark", "reliability")
    sections = data.setdefault("sections", {})
    for name in args.only or list(SECTIONS):
        figures, run = measured(lambda: SECTIONS[name](args))
        sections[name] = {
            **figures,
            "started": run["started"],
            "wall_s": run["wall_s"],
            "command": command_line("experiments.bench.reliability", argv),
            "load_avg_1_5_15": {"start": run["machine"].get("load_avg_1_5_15"), "end": run["machine"]["load_avg_at_end"]},
            "notes": run["notes"],
        }
        print(f"{name}: {'met' if figures['met'] else 'MISSED'} ({sections[name]['wall_s']} s)")
        write_json(args.out, data)  # after each section, so a later crash keeps the earlier ones
    data.update(machine=machine_info(), versions=package_versions(("fastapi", "uvicorn", "starlette", "bm25s", "hypothesis", "requests")))
    data["met"] = all(s.get("met", False) for s in sections.values())
    path = write_json(args.out, data)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
