"""Sampler throughput: engine start, warm-up, and generated tokens/s at several batch sizes for
one backend on the real default model (or any model). Run each backend in its own process
(vLLM's CPU worker pins torch's threads for the whole process):

    python -m experiments.bench.sampler_throughput --backend transformers
    python -m experiments.bench.sampler_throughput --backend vllm --batches 1 8 32 --new-tokens 64

Prompts are chat-templated questions (distinct per row, so no prefix is shared), sampled at
temperature 1 with per-row seeds (the RL setting). Tokens/s counts the tokens actually
generated (a row may end early at EOS) over the wall time of the whole batched call, best of
`--repeats`. Prints one JSON line per measurement and writes
experiments/bench/results/sampler_throughput.json, one entry per backend (a run replaces its
backend's entry and keeps the others), each with the machine, the model, the package
versions and the exact command.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from experiments.bench import RESULTS_DIR, command_line, measured, package_versions, write_json
from policies.models import DEFAULT_MODEL, load_tokenizer, model_info, resolve_model
from policies.samplers import SamplingParams, make_sampler

QUESTIONS = ["What is the capital of France?", "Who wrote Hamlet?", "How far is the Moon?",
             "Name a prime number above 100.", "Why is the sky blue?", "What is photosynthesis?",
             "Who painted the Mona Lisa?", "When did World War II end?"]


def chat_prompts(tokenizer, n: int) -> list[list[int]]:
    """`n` distinct chat-templated questions as token ids."""
    prompts = []
    for i in range(n):
        question = f"{QUESTIONS[i % len(QUESTIONS)]} (case {i})"
        prompts.append(list(tokenizer.apply_chat_template([{"role": "user", "content": question}],
                                                          add_generation_prompt=True, tokenize=True,
                                                          return_dict=False)))
    return prompts


def measure(backend: str, model: str, batches: list[int], new_tokens: int, repeats: int) -> dict[str, Any]:
    """Start the backend, warm it up with one call, then the best of `repeats` batched calls
    per batch size. Each measurement is also printed as one JSON line as it is taken."""
    tokenizer = load_tokenizer(model)
    start = time.perf_counter()
    sampler = make_sampler(backend, model=resolve_model(model), tokenizer=tokenizer)
    out: dict[str, Any] = {"start_s": round(time.perf_counter() - start, 2)}
    print(json.dumps({"backend": backend, "model": model, "start_s": out["start_s"]}))
    try:
        params = SamplingParams(temperature=1.0, max_new_tokens=new_tokens)
        start = time.perf_counter()
        sampler.generate(chat_prompts(tokenizer, 1), params, seeds=[0])
        out["first_generate_s"] = round(time.perf_counter() - start, 2)
        print(json.dumps({"backend": backend, "first_generate_s": out["first_generate_s"]}))
        out["batches"] = []
        for batch in batches:
            prompts = chat_prompts(tokenizer, batch)
            best = None
            for r in range(repeats):
                start = time.perf_counter()
                completions = sampler.generate(prompts, params, seeds=[1000 * r + i for i in range(batch)])
                elapsed = time.perf_counter() - start
                tokens = sum(len(c.token_ids) for c in completions)
                if best is None or tokens / elapsed > best[0] / best[1]:
                    best = (tokens, elapsed)
            tokens, elapsed = best
            row = {"batch": batch, "new_tokens": new_tokens, "generated": tokens, "seconds": round(elapsed, 2),
                   "tok_per_s": round(tokens / elapsed, 1)}
            out["batches"].append(row)
            print(json.dumps({"backend": backend, **row}))
    finally:
        sampler.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["transformers", "vllm"], default="transformers")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "sampler_throughput.json", help="the result JSON")
    parser.add_argument("--notes", default="", help="a remark to store with the result")
    args = parser.parse_args(argv)

    figures, run = measured(lambda: measure(args.backend, args.model, args.batches, args.new_tokens, args.repeats))
    entry = {
        "started": run["started"],
        "command": command_line("experiments.bench.sampler_throughput", argv),
        "wall_s": run["wall_s"],
        **figures,
        "settings": {"batches": args.batches, "new_tokens": args.new_tokens, "repeats": args.repeats,
                     "temperature": 1.0, "measure": "best of repeats, generated tokens / wall of the batched call"},
        "model": model_info(args.model),
        "versions": package_versions(),
        "machine": run["machine"],
        "notes": ([args.notes] if args.notes else []) + run["notes"],
    }
    data = json.loads(args.out.read_text()) if args.out.exists() else {"benchmark": "sampler_throughput", "backends": {}}
    data.setdefault("backends", {})[args.backend] = entry
    path = write_json(args.out, data)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
