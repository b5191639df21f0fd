"""Sampler throughput: engine start, warm-up, and generated tokens/s at several batch sizes for
one backend on the real default model (or any model). Run each backend in its own process
(vLLM's CPU worker pins torch's threads for the whole process):

    python -m policies.samplers.benchmark --backend transformers
    python -m policies.samplers.benchmark --backend vllm --batches 1 8 32 --new-tokens 64

Prompts are chat-templated questions (distinct per row, so no prefix is shared), sampled at
temperature 1 with per-row seeds (the RL setting). Tokens/s counts the tokens actually
generated (a row may end early at EOS) over the wall time of the whole batched call, best of
`--repeats`. Prints one JSON line per measurement.
"""

from __future__ import annotations

import argparse
import json
import time

from ..models import DEFAULT_MODEL, load_tokenizer, resolve_model
from .base import SamplingParams
from .factory import make_sampler

QUESTIONS = ["What is the capital of France?", "Who wrote Hamlet?", "How far is the Moon?",
             "Name a prime number above 100.", "Why is the sky blue?", "What is photosynthesis?",
             "Who painted the Mona Lisa?", "When did World War II end?"]


def chat_prompts(tokenizer, n: int) -> list[list[int]]:
    prompts = []
    for i in range(n):
        question = f"{QUESTIONS[i % len(QUESTIONS)]} (case {i})"
        prompts.append(list(tokenizer.apply_chat_template([{"role": "user", "content": question}],
                                                          add_generation_prompt=True, tokenize=True,
                                                          return_dict=False)))
    return prompts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["transformers", "vllm"], default="transformers")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)

    tokenizer = load_tokenizer(args.model)
    path = resolve_model(args.model)
    start = time.perf_counter()
    sampler = make_sampler(args.backend, model=path, tokenizer=tokenizer)
    print(json.dumps({"backend": args.backend, "model": args.model, "start_s": round(time.perf_counter() - start, 2)}))
    params = SamplingParams(temperature=1.0, max_new_tokens=args.new_tokens)
    start = time.perf_counter()
    sampler.generate(chat_prompts(tokenizer, 1), params, seeds=[0])
    print(json.dumps({"backend": args.backend, "first_generate_s": round(time.perf_counter() - start, 2)}))
    for batch in args.batches:
        prompts = chat_prompts(tokenizer, batch)
        best = None
        for r in range(args.repeats):
            start = time.perf_counter()
            out = sampler.generate(prompts, params, seeds=[1000 * r + i for i in range(batch)])
            elapsed = time.perf_counter() - start
            tokens = sum(len(c.token_ids) for c in out)
            if best is None or tokens / elapsed > best[0] / best[1]:
                best = (tokens, elapsed)
        tokens, elapsed = best
        print(json.dumps({"backend": args.backend, "batch": batch, "new_tokens": args.new_tokens,
                          "generated": tokens, "seconds": round(elapsed, 2), "tok_per_s": round(tokens / elapsed, 1)}))
    sampler.close()


if __name__ == "__main__":
    main()
