"""Learner throughput: packed exact replay against per-turn replay, forward + backward of the
token log-prob loss, on the same model and the same episodes. Target (DESIGN.md's reason for
the packer):

    packed replay >= 2 x the generated tokens/s of per-turn replay at 8 turns (mem1).

    python -m experiments.bench.learner                                 # tiny model, 2/4/8/16 turns, mem1
    python -m experiments.bench.learner --policies mem1 full_context --turns 2 4 8
    python -m experiments.bench.learner --model --turns 2 4 8 --prompt 128 --generated 32 --observation 64  # SmolLM2

The two paths (policies/packer.py):
- packed: `pack_episode` lays the whole episode out once (MEM1: prompt | G1 | O1 | G2 | G2' O2
  | ...), `collate` makes a batch of one row, and `forward_packed` runs one forward pass with the
  block attention mask, computed tile-sparse as the learner does on CPU (and, for reference,
  with SDPA over the dense mask: `packed_dense`); one backward.
- per-turn: `per_turn_replay` makes every turn's context its own row (the prompt repeated every
  turn, plain causal attention), `collate` pads the rows into one batch, one forward pass and
  one backward. Each path is one forward + backward per episode, so the two differ only in
  the layout.

Episodes are played with random token ids under a real memory policy, as
tests/policies/test_packer.py does, with segment lengths drawn around `--prompt`,
`--generated` and `--observation` (+-`--jitter`); both paths see the same episode. The loss is
-sum(logp) / generated tokens; the benchmark also checks that the two paths give the same
log-probs (<= 1e-4) and the same gradients, so a fast wrong path cannot pass.

Writes experiments/bench/results/learner.json: per policy and turn count the median wall of
one episode's forward + backward, generated (loss) tokens/s, processed tokens/s, token and
attention-entry counts, the speedup and whether the target is met; the model, the machine,
its load, the package versions and the exact command.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from experiments.bench import RESULTS_DIR, command_line, contention_note, machine_info, package_versions, write_json
from policies.memory import make_memory_policy
from policies.packer import PackedBatch, collate, dense_mask, pack_episode, per_turn_replay, token_logp
from policies.tile_attention import tile_plan
from policies.records import GENERATED, OBSERVATION, Episode, Segment, Turn

TARGET_SPEEDUP = 2.0  # packed / per-turn generated tokens/s ...
TARGET_TURNS = 8  # ... at this many turns, mem1
# The tests' tiny config (2 layers) at SmolLM2-135M's layer width: hidden 576, MLP 1536, 9
# query / 3 key-value heads of 64. Per token, attention and the linear layers then weigh what
# they weigh in SmolLM2 (their ratio is set per layer by the width and the sequence length,
# not by the depth), at 2/30 of its cost; a narrower model would overstate attention.
TINY_OVERRIDES: dict[str, int] = dict(
    hidden_size=576, intermediate_size=1536, num_hidden_layers=2, num_attention_heads=9, num_key_value_heads=3
)


@dataclass(frozen=True)
class EpisodeShape:
    """Mean segment lengths in tokens, by default those of this repository's QA task with the
    SmolLM2 tokenizer: the prompt with its few-shot demonstration is 635 tokens at N=1 (830 at
    N=16); a turn's think + action (capped at max_new_tokens=160) and an observation of three
    short passages are set, not measured, at 96 and 192. A mem1 call then peaks near 1,020
    tokens, the MEM1 paper's ~1,040 (MEM1.md)."""

    prompt: int = 640
    generated: int = 96
    observation: int = 192
    jitter: float = 0.25  # each length is drawn uniformly within mean x (1 +- jitter)

    def __post_init__(self):
        for name in ("prompt", "generated", "observation"):
            if getattr(self, name) < 1:
                raise ValueError(f"episode shape: {name}={getattr(self, name)} must be at least 1 token")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"episode shape: jitter={self.jitter} must be in [0, 1)")

    def draw(self, mean: int, rng: np.random.Generator) -> int:
        return max(1, int(round(mean * rng.uniform(1 - self.jitter, 1 + self.jitter))))


def random_episode(policy_spec: str, turns: int, shape: EpisodeShape, vocab_size: int, rng: np.random.Generator) -> Episode:
    """An episode of random token ids played under a memory policy, as the rollout would
    (the policy picks each turn's context from the episode so far)."""
    policy = make_memory_policy(policy_spec)

    def ids(n: int) -> tuple[int, ...]:
        return tuple(rng.integers(1, vocab_size, n).tolist())

    ep = Episode.start(f"{policy_spec}-{turns}", ids(shape.draw(shape.prompt, rng)))
    for t in range(turns):
        context = policy.context(ep)
        gen = ids(shape.draw(shape.generated, rng))
        ep, g = ep.add_segment(Segment(GENERATED, gen))
        obs = None
        if t < turns - 1:
            ep, obs = ep.add_segment(Segment(OBSERVATION, ids(shape.draw(shape.observation, rng))))
        ep = ep.add_turn(
            Turn(context=context, generated=g, logp=tuple(rng.normal(size=len(gen)).tolist()), finish_reason="stop",
                 observation=obs, state_span=(0, len(gen) // 2))
        )
    return ep


def benchmark_episode(policy_spec: str, turns: int, shape: EpisodeShape, vocab_size: int, seed: int = 0) -> Episode:
    """The episode measured for (policy, turns): seeded by both, so it does not depend on
    which other turn counts or policies a run includes."""
    rng = np.random.default_rng([seed, turns, sum(policy_spec.encode())])
    return random_episode(policy_spec, turns, shape, vocab_size, rng)


def _forward_backward(model, batch: PackedBatch, attention: str = "sdpa") -> tuple[torch.Tensor, dict[str, float]]:
    """One forward + backward of -mean(logp) over the loss tokens. Returns the loss tokens'
    log-probs in turn order (N,) and the timings: forward and total wall seconds, and the
    process CPU seconds (all threads), which other jobs on a shared machine inflate less."""
    model.zero_grad(set_to_none=True)
    start, cpu_start = time.perf_counter(), time.process_time()
    logp = token_logp(model, batch, attention=attention)  # (B, L)
    forward_s = time.perf_counter() - start
    loss = -(logp * batch.loss_mask).sum() / batch.loss_mask.sum()
    loss.backward()
    times = {"wall_s": time.perf_counter() - start, "forward_s": forward_s, "cpu_s": time.process_time() - cpu_start}
    # Loss tokens in turn order: (turn, position) sorts both layouts the same way.
    rows, cols = batch.loss_mask.nonzero(as_tuple=True)
    order = np.lexsort((cols.numpy(), batch.turn_ids[rows, cols].numpy()))
    return logp.detach()[rows, cols][torch.from_numpy(order)], times


def _grads(model) -> torch.Tensor:
    return torch.cat([p.grad.detach().flatten() for p in model.parameters() if p.grad is not None])


def _layout(batch: PackedBatch, attention: str = "sdpa") -> dict[str, int]:
    """Token counts of a batch, and the attention entries (per head and layer) it costs: the
    dense mask's B x L^2, or the query x key pairs of the tiles the tile-sparse path visits."""
    real = (batch.block_ids >= 0).sum(1)  # (B,) tokens per row without padding
    if attention == "tiles":
        plan = tile_plan(dense_mask(batch.block_ids, batch.chains))
        entries = sum((t.stop - t.start) * len(t.keys) for row in plan for t in row)
    else:
        entries = batch.input_ids.shape[0] * batch.input_ids.shape[1] ** 2
    return {
        "rows": int(batch.input_ids.shape[0]),
        "tokens": int(real.sum()),
        "padded_tokens": int(batch.input_ids.numel()),
        "loss_tokens": int(batch.loss_mask.sum()),
        "attention_entries": int(entries),
    }


def measure_episode(model, episode: Episode, *, repeats: int = 3, warmup: int = 1) -> dict[str, Any]:
    """Packed and per-turn forward + backward of one episode: median timings over `repeats`
    after `warmup` passes, alternating the two paths so that a change in machine load hits
    both alike. The first pass of each path also gives the log-probs and gradients compared."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats={repeats} must be >= 1 and warmup={warmup} >= 0")
    start = time.perf_counter()
    packed = collate([pack_episode(episode)])
    prep_packed = time.perf_counter() - start
    start = time.perf_counter()
    per_turn = collate(per_turn_replay(episode))
    prep_per_turn = time.perf_counter() - start
    # (batch, attention): packed with the tile-sparse mask (the learner's CPU path), packed
    # with the dense SDPA mask (for reference), and per-turn rows with plain SDPA.
    batches = {"packed": (packed, "tiles"), "packed_dense": (packed, "sdpa"), "per_turn": (per_turn, "sdpa")}

    logp: dict[str, torch.Tensor] = {}
    grads: dict[str, torch.Tensor] = {}
    timings: dict[str, list[dict[str, float]]] = {k: [] for k in batches}
    for i in range(warmup + repeats):
        for name, (batch, attention) in batches.items():
            lp, times = _forward_backward(model, batch, attention)
            if i == 0:
                logp[name], grads[name] = lp, _grads(model)
            if i >= warmup:
                timings[name].append(times)

    out: dict[str, Any] = {"turns": len(episode.turns)}
    for name, (batch, attention) in batches.items():
        layout = _layout(batch, attention)
        median = {k: statistics.median(t[k] for t in timings[name]) for k in ("wall_s", "forward_s", "cpu_s")}
        out[name] = {
            **layout,
            "wall_s": round(median["wall_s"], 4),  # median forward + backward of the episode
            "forward_s": round(median["forward_s"], 4),
            "cpu_s": round(median["cpu_s"], 4),
            "walls_s": [round(t["wall_s"], 4) for t in timings[name]],
            "attention": attention,
            "prep_s": round(prep_per_turn if name == "per_turn" else prep_packed, 4),  # pack + collate, not in wall_s
            "loss_tokens_per_s": round(layout["loss_tokens"] / median["wall_s"], 1),
            "processed_tokens_per_s": round(layout["tokens"] / median["wall_s"], 1),
        }
    g_p, g_t = grads["packed"], grads["per_turn"]
    out["speedup"] = round(out["per_turn"]["wall_s"] / out["packed"]["wall_s"], 3)  # = ratio of loss tokens/s
    out["speedup_cpu"] = round(out["per_turn"]["cpu_s"] / out["packed"]["cpu_s"], 3)
    out["speedup_dense"] = round(out["per_turn"]["wall_s"] / out["packed_dense"]["wall_s"], 3)  # packed with the dense mask
    out["token_ratio"] = round(out["per_turn"]["padded_tokens"] / out["packed"]["tokens"], 3)
    out["attention_ratio"] = round(out["per_turn"]["attention_entries"] / out["packed"]["attention_entries"], 3)
    if logp["packed"].shape != logp["per_turn"].shape:  # both layouts must score the same generated tokens
        raise RuntimeError(f"episode {episode.task_id!r}: packed replay scores {logp['packed'].numel()} tokens, "
                           f"per-turn replay {logp['per_turn'].numel()}")
    out["check"] = {
        "logp_max_abs_diff": float((logp["packed"] - logp["per_turn"]).abs().max()),
        "grad_max_abs_diff": float((g_p - g_t).abs().max()),
        "grad_max_abs": float(g_t.abs().max()),
    }
    return out


def run(
    model,
    vocab_size: int,
    *,
    turns: Sequence[int] = (2, 4, 8, 16),
    policies: Sequence[str] = ("mem1",),
    shape: EpisodeShape = EpisodeShape(),
    repeats: int = 3,
    warmup: int = 1,
    seed: int = 0,
    log: Callable[[str], None] = functools.partial(print, flush=True),
) -> dict[str, Any]:
    """The benchmark's core: per memory policy and turn count, one random episode measured
    by `measure_episode`. Returns {"per_policy": {policy: {turns: result}}, "headline": ...}."""
    if any(t < 1 for t in turns):
        raise ValueError(f"turns={list(turns)}: every turn count must be at least 1")
    model.train()  # the learner's mode (a llama has no dropout, so log-probs are unchanged)
    per_policy: dict[str, dict[str, Any]] = {}
    for policy in policies:
        per_policy[policy] = {}
        for n in turns:
            episode = benchmark_episode(policy, n, shape, vocab_size, seed)
            result = measure_episode(model, episode, repeats=repeats, warmup=warmup)
            if hasattr(os, "getloadavg"):
                result["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
            per_policy[policy][str(n)] = result
            log(f"{policy} {n:>2} turns: packed {result['packed']['wall_s']:.3f} s ({result['packed']['tokens']} tok), "
                f"per-turn {result['per_turn']['wall_s']:.3f} s ({result['per_turn']['padded_tokens']} tok), "
                f"speedup {result['speedup']:.2f}x (dense mask {result['speedup_dense']:.2f}x), logp diff {result['check']['logp_max_abs_diff']:.1e}")
    return {"per_policy": per_policy, "headline": headline(per_policy)}


def headline(per_policy: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Speedup per policy and turn count, the target check, and the worst correctness gap."""
    out: dict[str, Any] = {
        "target": f"mem1 packed >= {TARGET_SPEEDUP} x per-turn generated tokens/s at {TARGET_TURNS} turns"
    }
    for policy, by_turns in per_policy.items():
        out[policy] = {
            f"{key}_by_turns": {n: r[key] for n, r in by_turns.items()}
            for key in ("speedup", "speedup_cpu", "speedup_dense", "token_ratio", "attention_ratio")
        }
    at_target = per_policy.get("mem1", {}).get(str(TARGET_TURNS))
    out["speedup_at_target"] = at_target["speedup"] if at_target else None
    out["speedup_cpu_at_target"] = at_target["speedup_cpu"] if at_target else None
    out["meets_target"] = at_target["speedup"] >= TARGET_SPEEDUP if at_target else None
    checks = [r["check"] for by_turns in per_policy.values() for r in by_turns.values()]
    out["logp_max_abs_diff"] = max((c["logp_max_abs_diff"] for c in checks), default=0.0)
    out["grad_max_rel_diff"] = max((c["grad_max_abs_diff"] / max(c["grad_max_abs"], 1e-30) for c in checks), default=0.0)
    return out


def build_model(name: str | None) -> tuple[Any, int, dict[str, Any]]:
    """(model, vocab size, what the result records about it). None: a random-init
    `build_tiny_model` over the character tokenizer with TINY_OVERRIDES."""
    from policies.models import build_char_tokenizer, build_tiny_model, load_model, model_info

    if name is None:
        tokenizer = build_char_tokenizer()
        model = build_tiny_model(tokenizer, seed=0, **TINY_OVERRIDES)
        info = {"model": "tiny (policies.models.build_tiny_model, random init)", "tokenizer": "build_char_tokenizer",
                "overrides": TINY_OVERRIDES, "vocab_size": len(tokenizer)}
    else:
        model = load_model(name)
        info = model_info(name)
    model.config.use_cache = False
    info["parameters"] = sum(p.numel() for p in model.parameters())
    info["dtype"] = str(next(model.parameters()).dtype)
    info["attention"] = getattr(model.config, "_attn_implementation", None)  # sdpa on CPU
    return model, int(model.config.vocab_size), info


NOTES = [
    "wall_s: median over the repeats of one episode's forward + backward (token_logp, then -mean(logp) over the "
    "generated tokens, backward), after warm-up passes; the packed and per-turn passes alternate, so a change in "
    "machine load hits both. pack + collate time is prep_s, outside wall_s (packing runs in the env runners).",
    "Three passes per episode: 'packed' is what the learner runs on CPU (attention='tiles': tile-sparse SDPA that "
    "visits only the key tiles the block mask touches, policies/tile_attention.py); 'packed_dense' is the same "
    "packed row with SDPA over the dense mask; 'per_turn' is per-turn replay.",
    "speedup = per-turn wall / packed wall = ratio of generated (loss) tokens/s; speedup_dense the same for the "
    "dense mask; speedup_cpu uses the process CPU "
    "seconds instead (less inflated by other jobs, but it also counts threads spinning while they wait). Both paths "
    "compute the same log-probs (check.logp_max_abs_diff) and gradients (check.grad_max_abs_diff).",
    "Per-turn replay pads the turns' rows of an episode into one batch (one forward + backward per episode, like "
    "the packed path); padded_tokens counts the padding, tokens does not. token_ratio = per-turn padded tokens / "
    "packed tokens: the ratio of the linear layers' work, machine-independent; under mem1 the speedup stays "
    "below it, since packed attention costs more (next note).",
    "attention_entries: for the dense mask rows x L^2, which grows with the square of the packed length while "
    "per-turn rows stay short under mem1 (so speedup_dense falls below token_ratio as turns grow); for the tiles "
    "path the query x key pairs of the visited tiles (attention_ratio = per-turn / packed tiles). FlexAttention's "
    "block mask (GPU, policies/packer.py flex_block_mask) skips masked tiles the same way; it is not measured here.",
    "Random token ids under the real memory policy (as tests/policies/test_packer.py); the default tiny model uses "
    "the character tokenizer's ~100-token vocabulary so the LM head, identical work in both paths, does not hide "
    "the backbone difference (with SmolLM2's 49k vocabulary it would outweigh a 2-layer backbone).",
]


def main(argv: list[str] | None = None) -> int:
    from policies.models import DEFAULT_MODEL

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", nargs="?", const=DEFAULT_MODEL, default=None,
                        help=f"a model name/path for load_model; bare --model = {DEFAULT_MODEL} (default: the tiny model)")
    parser.add_argument("--turns", type=int, nargs="+", default=[2, 4, 8, 16], help="turn counts (default 2 4 8 16)")
    parser.add_argument("--policies", nargs="+", default=["mem1"], help="memory policies (default mem1; e.g. full_context)")
    parser.add_argument("--prompt", type=int, default=EpisodeShape.prompt, help="mean prompt tokens")
    parser.add_argument("--generated", type=int, default=EpisodeShape.generated, help="mean generated tokens per turn")
    parser.add_argument("--observation", type=int, default=EpisodeShape.observation, help="mean observation tokens per turn")
    parser.add_argument("--jitter", type=float, default=EpisodeShape.jitter, help="segment lengths vary by +- this fraction")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per path (median; default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed passes per path first (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "learner.json", help="the result JSON")
    parser.add_argument("--notes", default="", help="a remark to store with the result")
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    machine_at_start = machine_info()
    t0 = time.perf_counter()
    model, vocab_size, info = build_model(args.model)
    shape = EpisodeShape(args.prompt, args.generated, args.observation, args.jitter)
    result = run(model, vocab_size, turns=args.turns, policies=args.policies, shape=shape, repeats=args.repeats,
                 warmup=args.warmup, seed=args.seed)
    wall = time.perf_counter() - t0
    machine_at_end = machine_info()

    loads = [m.get("load_avg_1_5_15", [0.0])[0] for m in (machine_at_start, machine_at_end)]
    loads += [r.get("load_avg_1m_after", 0.0) for by in result["per_policy"].values() for r in by.values()]
    notes = [args.notes] if args.notes else []
    if contention := contention_note(loads):
        notes.append(contention + " The alternating packed/per-turn passes keep the speedup comparable but less "
                     "certain; speedup_cpu (process CPU seconds) is the steadier figure then.")
    data = {
        "benchmark": "learner",
        "started": started,
        "command": command_line("experiments.bench.learner", argv),
        "wall_s": round(wall, 1),
        "headline": result["headline"],
        "per_policy": result["per_policy"],
        "settings": {
            "turns": args.turns,
            "policies": args.policies,
            "episode_shape": asdict(shape),
            "repeats": args.repeats,
            "warmup": args.warmup,
            "seed": args.seed,
            "loss": "-sum(logp) / generated tokens, one forward + backward per episode per path",
            "torch_threads": torch.get_num_threads(),
            "device": "cpu",
        },
        "model": info,
        "versions": package_versions(("torch", "transformers", "numpy")),
        "machine": {**machine_at_start, "load_avg_at_end": machine_at_end.get("load_avg_1_5_15")},
        "notes": notes + NOTES,
    }
    path = write_json(args.out, data)
    print(json.dumps(data["headline"], indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
