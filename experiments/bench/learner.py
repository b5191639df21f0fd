"""Learner throughput: packed exact replay against per-turn replay, forward + backward of the
token log-prob loss, on the same model and the same episodes. Target (the packer's reason to
exist, docs/packing.md):

    packed replay >= 2 x the generated tokens/s of per-turn replay at 8 turns (mem1).

    python -m experiments.bench.learner                                 # tiny model, 2/4/8/16 turns, mem1
    python -m experiments.bench.learner --policies mem1 full_context --turns 2 4 8
    python -m experiments.bench.learner --model --turns 2 4 8 --prompt 128 --generated 32 --observation 64  # SmolLM2
    python -m experiments.bench.learner --group 4                       # GRPO group: shared prompt vs per episode

Group mode (`--group G`, `run_group`): G mem1 episodes of one task (the same 650-token prompt,
each its own turns) packed as one row with the prompt laid out once (`pack_group`) against
today's per-episode packing (`pack_episode` per episode, the G rows padded into one batch as
the learner's micro-batch does; also G single-row passes, no padding); forward + backward,
generated tokens/s, target >= 1.6 x at 3 turns (2 objectives: two searches and an answer).
It writes only the `group_shared` entry of the result JSON and keeps the rest; the default
mode keeps an existing `group_shared` entry.

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
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from experiments.bench import RESULTS_DIR, command_line, contention_note, machine_info, package_versions, write_json
from policies.memory import make_memory_policy
from policies.packer import PackedBatch, collate, dense_mask, pack_episode, pack_group, per_turn_replay, token_logp
from policies.tile_attention import tile_plan
from policies.records import GENERATED, OBSERVATION, PROMPT, Episode, Segment, Turn

TARGET_SPEEDUP = 2.0  # packed / per-turn generated tokens/s ...
TARGET_TURNS = 8  # ... at this many turns, mem1
GROUP_TARGET_SPEEDUP = 1.6  # group-shared / per-episode packing, generated tokens/s ...
GROUP_TARGET_TURNS = 3  # ... for 2-objective episodes: two searches and an answer (train_qa_grpo.yaml)
GROUP_TURNS = (2, 3, 4)  # group mode's default turn counts (max_turns 4 in train_qa_grpo.yaml)
GROUP_PROMPT = 650  # tokens: the 2-objective QA prompt with its demonstration (EpisodeShape's note)
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
    tokens, the MEM1 paper's ~1,040."""

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

    logp, grads, timings = _time_paths(model, {k: lambda b=b, a=a: _forward_backward(model, b, a) for k, (b, a) in batches.items()}, warmup, repeats)

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


def _time_paths(model, runs: dict[str, Callable[[], tuple[torch.Tensor, dict[str, float]]]], warmup: int, repeats: int):
    """Each path's forward + backward, interleaved `warmup + repeats` times (so drift in the
    machine's speed hits every path alike): log-probs and gradients of the first pass, and the
    timings after the warm-up."""
    logp: dict[str, torch.Tensor] = {}
    grads: dict[str, torch.Tensor] = {}
    timings: dict[str, list[dict[str, float]]] = {k: [] for k in runs}
    for i in range(warmup + repeats):
        for name, run in runs.items():
            lp, times = run()
            if i == 0:
                logp[name], grads[name] = lp, _grads(model)
            if i >= warmup:
                timings[name].append(times)
    return logp, grads, timings


def group_episodes(policy_spec: str, group: int, turns: int, shape: EpisodeShape, vocab_size: int,
                   seed: int = 0) -> list[Episode]:
    """A GRPO group: `group` episodes of one task, `random_episode`s that share one prompt of
    exactly `shape.prompt` token ids (the rollout's episodes of a task start from the same
    tokenized prompt); the turns of each are its own."""
    rng = np.random.default_rng([seed, turns, group, sum(policy_spec.encode())])
    prompt = Segment(PROMPT, tuple(rng.integers(1, vocab_size, shape.prompt).tolist()))
    episodes = [random_episode(policy_spec, turns, shape, vocab_size, rng) for _ in range(group)]
    # Contexts name the prompt by reference (segment 0, whole), so swapping its ids is safe.
    return [replace(ep, segments=(prompt,) + ep.segments[1:]) for ep in episodes]


def _passes(model, batches: Sequence[PackedBatch], order: Sequence[np.ndarray], attention: str = "tiles"
            ) -> tuple[torch.Tensor, dict[str, float]]:
    """One forward + backward per batch of -sum(logp) / all loss tokens (gradients accumulate,
    so the sum over batches is the group's gradient). Returns the loss tokens' log-probs in
    episode order (`order[i]`: the flat indices of batch i's loss tokens, in episode order)
    and the summed timings."""
    model.zero_grad(set_to_none=True)
    n_loss = sum(int(b.loss_mask.sum()) for b in batches)
    logps, times = [], {"wall_s": 0.0, "forward_s": 0.0, "cpu_s": 0.0}
    for batch, idx in zip(batches, order):
        start, cpu_start = time.perf_counter(), time.process_time()
        logp = token_logp(model, batch, attention=attention)
        times["forward_s"] += time.perf_counter() - start
        (-(logp * batch.loss_mask).sum() / n_loss).backward()
        times["wall_s"] += time.perf_counter() - start
        times["cpu_s"] += time.process_time() - cpu_start
        logps.append(logp.detach().flatten()[torch.from_numpy(idx)])
    return torch.cat(logps), times


def measure_group(model, episodes: Sequence[Episode], *, repeats: int = 3, warmup: int = 1) -> dict[str, Any]:
    """Forward + backward of one group, three ways, all with the learner's CPU attention
    (tiles): 'group_shared' (one row, `pack_group`), 'per_episode' (`pack_episode` rows
    padded into one batch: the learner's micro-batch of G episodes) and 'per_episode_rows'
    (one unpadded row per pass). Median timings over `repeats` after `warmup`, the paths
    alternating; the first pass of each gives the log-probs and gradients compared."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats={repeats} must be >= 1 and warmup={warmup} >= 0")
    start = time.perf_counter()
    singles = [pack_episode(e) for e in episodes]
    per_episode = collate(singles)
    prep_per_episode = time.perf_counter() - start
    start = time.perf_counter()
    grouped = pack_group(episodes)
    group_batch = collate([grouped])
    prep_group = time.perf_counter() - start
    rows = [collate([p]) for p in singles]

    # Flat indices of the loss tokens in episode order (within an episode both layouts keep
    # the packed order), so the three paths' log-probs line up token for token.
    width = per_episode.input_ids.shape[1]
    per_episode_order = np.concatenate([i * width + np.nonzero(p.loss_mask)[0] for i, p in enumerate(singles)])
    group_order = np.concatenate([np.nonzero(grouped.episode_ids == i)[0] for i in range(len(episodes))])
    paths = {
        "group_shared": ([group_batch], [group_order]),
        "per_episode": ([per_episode], [per_episode_order]),
        "per_episode_rows": (rows, [np.nonzero(p.loss_mask)[0] for p in singles]),
    }
    logp, grads, timings = _time_paths(model, {k: lambda b=b, o=o: _passes(model, b, o) for k, (b, o) in paths.items()}, warmup, repeats)

    out: dict[str, Any] = {"turns": [len(e.turns) for e in episodes], "group": len(episodes),
                           "prompt_tokens": len(episodes[0].segments[0]), "shared_tokens": grouped.shared_tokens}
    for name, (batches, _) in paths.items():
        layouts = [_layout(b, "tiles") for b in batches]
        layout = {k: sum(l[k] for l in layouts) for k in layouts[0]}
        median = {k: statistics.median(t[k] for t in timings[name]) for k in ("wall_s", "forward_s", "cpu_s")}
        out[name] = {
            **layout,
            "passes": len(batches),
            "wall_s": round(median["wall_s"], 4),
            "forward_s": round(median["forward_s"], 4),
            "cpu_s": round(median["cpu_s"], 4),
            "walls_s": [round(t["wall_s"], 4) for t in timings[name]],
            "best_wall_s": round(min(t["wall_s"] for t in timings[name]), 4),  # other jobs only add time
            "attention": "tiles",
            "prep_s": round(prep_group if name == "group_shared" else prep_per_episode, 4),
            "loss_tokens_per_s": round(layout["loss_tokens"] / median["wall_s"], 1),
            "processed_tokens_per_s": round(layout["tokens"] / median["wall_s"], 1),
        }
    g = out["group_shared"]
    for ref, suffix in (("per_episode", ""), ("per_episode_rows", "_rows")):
        out[f"speedup{suffix}"] = round(out[ref]["wall_s"] / g["wall_s"], 3)  # = ratio of generated tokens/s
        out[f"speedup_cpu{suffix}"] = round(out[ref]["cpu_s"] / g["cpu_s"], 3)
        out[f"speedup_best{suffix}"] = round(out[ref]["best_wall_s"] / g["best_wall_s"], 3)  # fastest passes
    out["token_ratio"] = round(out["per_episode"]["padded_tokens"] / g["tokens"], 3)  # linear layers' work
    out["token_ratio_rows"] = round(out["per_episode_rows"]["tokens"] / g["tokens"], 3)
    out["attention_ratio"] = round(out["per_episode"]["attention_entries"] / g["attention_entries"], 3)
    for name in ("per_episode", "per_episode_rows"):
        if logp[name].shape != logp["group_shared"].shape:
            raise RuntimeError(f"group packing scores {logp['group_shared'].numel()} tokens, {name} {logp[name].numel()}")
    g_ref = grads["per_episode"]
    out["check"] = {
        "logp_max_abs_diff": float(max((logp[n] - logp["group_shared"]).abs().max() for n in ("per_episode", "per_episode_rows"))),
        "grad_max_abs_diff": float(max((grads[n] - grads["group_shared"]).abs().max() for n in ("per_episode", "per_episode_rows"))),
        "grad_max_abs": float(g_ref.abs().max()),
    }
    return out


def run_group(
    model,
    vocab_size: int,
    *,
    group: int = 4,
    turns: Sequence[int] = GROUP_TURNS,
    policy: str = "mem1",
    shape: EpisodeShape = EpisodeShape(prompt=GROUP_PROMPT),
    repeats: int = 3,
    warmup: int = 1,
    seed: int = 0,
    log: Callable[[str], None] = functools.partial(print, flush=True),
) -> dict[str, Any]:
    """Group mode's core: per turn count, one group measured by `measure_group`. Returns
    {"by_turns": {turns: result}, "headline": ...}."""
    if group < 1 or any(t < 1 for t in turns):
        raise ValueError(f"group={group}, turns={list(turns)}: both must be at least 1")
    model.train()
    by_turns: dict[str, Any] = {}
    for n in turns:
        result = measure_group(model, group_episodes(policy, group, n, shape, vocab_size, seed),
                               repeats=repeats, warmup=warmup)
        if hasattr(os, "getloadavg"):
            result["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
        by_turns[str(n)] = result
        log(f"{policy} group of {group}, {n} turns: shared {result['group_shared']['wall_s']:.3f} s "
            f"({result['group_shared']['tokens']} tok), per-episode {result['per_episode']['wall_s']:.3f} s "
            f"({result['per_episode']['padded_tokens']} tok padded), speedup {result['speedup']:.2f}x "
            f"(unpadded rows {result['speedup_rows']:.2f}x), logp diff {result['check']['logp_max_abs_diff']:.1e}")
    at = by_turns.get(str(GROUP_TARGET_TURNS))
    headline = {
        "target": f"{policy} group-shared packing >= {GROUP_TARGET_SPEEDUP} x per-episode packing generated tokens/s, "
                  f"G={group}, {GROUP_TARGET_TURNS} turns",
        **{f"{key}_by_turns": {n: r[key] for n, r in by_turns.items()}
           for key in ("speedup", "speedup_cpu", "speedup_best", "speedup_rows", "speedup_best_rows", "token_ratio",
                       "token_ratio_rows", "attention_ratio")},
        "speedup_at_target": at["speedup"] if at else None,
        "speedup_cpu_at_target": at["speedup_cpu"] if at else None,
        "speedup_best_at_target": at["speedup_best"] if at else None,
        "speedup_rows_at_target": at["speedup_rows"] if at else None,
        "meets_target": at["speedup"] >= GROUP_TARGET_SPEEDUP if at else None,
        "logp_max_abs_diff": max(r["check"]["logp_max_abs_diff"] for r in by_turns.values()),
        "grad_max_rel_diff": max(r["check"]["grad_max_abs_diff"] / max(r["check"]["grad_max_abs"], 1e-30)
                                 for r in by_turns.values()),
    }
    return {"by_turns": by_turns, "headline": headline}


GROUP_NOTES = [
    "group_shared: the G episodes in one row, the prompt laid out once (policies/packer.py pack_group); "
    "per_episode: pack_episode per episode, the G rows padded into one batch (the learner's micro-batch of G "
    "episodes), one forward + backward; per_episode_rows: one unpadded row per forward + backward, gradients "
    "accumulated. All with attention='tiles' (the learner's CPU path); loss -sum(logp) / the group's generated tokens.",
    "speedup = per_episode wall / group_shared wall = ratio of generated tokens/s (speedup_rows: against the "
    "unpadded rows), from the median passes; speedup_best from the fastest pass of each path (other jobs on a "
    "shared machine only add time, so it is the steadier figure under contention); speedup_cpu from process CPU "
    "seconds. token_ratio = per_episode padded tokens / group tokens, the linear layers' work: sharing saves "
    "(G-1) x prompt tokens, so the ceiling falls as turns add unshared tokens (about 1.9 at 2 turns, 1.5 at 3, 1.4 "
    "at 4 with the default segment lengths).",
    "Same random-token episodes as the default mode (random_episode under the memory policy), one shared prompt of "
    "exactly --prompt tokens (650: 2-objective QA), other lengths jittered.",
]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _start(args) -> tuple[dict[str, Any], Any, int, dict[str, Any], EpisodeShape]:
    """What both modes do first: seed, note the machine, load the model, fix the episode
    shape. The first value (`run`) carries the start time and machine for `_finish`."""
    torch.manual_seed(args.seed)
    run_info = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine_info(), "t0": time.perf_counter()}
    model, vocab_size, info = build_model(args.model)
    shape = EpisodeShape(args.prompt, args.generated, args.observation, args.jitter)
    return run_info, model, vocab_size, info, shape


def _finish(run_info: dict[str, Any], args, loads_during: list[float], contention_tail: str) -> dict[str, Any]:
    """The fields both modes record at the end: wall time, machine at start and end, notes
    (with a contention note when the load averages show other jobs)."""
    machine_at_end = machine_info()
    loads = [m.get("load_avg_1_5_15", [0.0])[0] for m in (run_info["machine"], machine_at_end)] + loads_during
    notes = [args.notes] if args.notes else []
    if contention := contention_note(loads):
        notes.append(contention + contention_tail)
    return {
        "started": run_info["started"],
        "wall_s": round(time.perf_counter() - run_info["t0"], 1),
        "machine": {**run_info["machine"], "load_avg_at_end": machine_at_end.get("load_avg_1_5_15")},
        "notes": notes,
    }


def main_group(args, argv: list[str] | None) -> int:
    """`--group G`: run only the group comparison; write it as the `group_shared` entry of
    the result JSON, keeping the other entries."""
    run_info, model, vocab_size, info, shape = _start(args)
    policy = args.policies[0]
    result = run_group(model, vocab_size, group=args.group, turns=args.turns, policy=policy, shape=shape,
                       repeats=args.repeats, warmup=args.warmup, seed=args.seed)
    end = _finish(run_info, args, [r.get("load_avg_1m_after", 0.0) for r in result["by_turns"].values()],
                  " The alternating passes keep the speedup comparable but less certain.")
    entry = {
        "started": end["started"],
        "command": command_line("experiments.bench.learner", argv),
        "wall_s": end["wall_s"],
        "headline": result["headline"],
        "by_turns": result["by_turns"],
        "settings": {"group": args.group, "policy": policy, "turns": args.turns, "episode_shape": asdict(shape),
                     "repeats": args.repeats, "warmup": args.warmup, "seed": args.seed,
                     "torch_threads": torch.get_num_threads(), "device": "cpu"},
        "model": info,
        "versions": package_versions(("torch", "transformers", "numpy")),
        "machine": end["machine"],
        "notes": end["notes"] + GROUP_NOTES,
    }
    data = _read_json(args.out) or {"benchmark": "learner"}
    data["group_shared"] = entry
    path = write_json(args.out, data)
    print(json.dumps(entry["headline"], indent=2))
    print(f"wrote {path} (group_shared)")
    return 0


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
    parser.add_argument("--turns", type=int, nargs="+", default=None,
                        help="turn counts (default 2 4 8 16; with --group: 2 3 4)")
    parser.add_argument("--policies", nargs="+", default=["mem1"], help="memory policies (default mem1; e.g. full_context)")
    parser.add_argument("--prompt", type=int, default=None,
                        help=f"mean prompt tokens (default {EpisodeShape.prompt}; with --group: exactly, default {GROUP_PROMPT})")
    parser.add_argument("--generated", type=int, default=EpisodeShape.generated, help="mean generated tokens per turn")
    parser.add_argument("--observation", type=int, default=EpisodeShape.observation, help="mean observation tokens per turn")
    parser.add_argument("--jitter", type=float, default=EpisodeShape.jitter, help="segment lengths vary by +- this fraction")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per path (median; default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed passes per path first (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "learner.json", help="the result JSON")
    parser.add_argument("--notes", default="", help="a remark to store with the result")
    parser.add_argument("--group", type=int, default=None, metavar="G",
                        help="run only the GRPO-group comparison: G episodes sharing their prompt in one row vs "
                             "per-episode packing (writes the result's group_shared entry)")
    args = parser.parse_args(argv)
    if args.group is not None:
        args.turns = args.turns or list(GROUP_TURNS)
        args.prompt = GROUP_PROMPT if args.prompt is None else args.prompt
        return main_group(args, argv)
    args.turns = args.turns or [2, 4, 8, 16]
    args.prompt = EpisodeShape.prompt if args.prompt is None else args.prompt

    run_info, model, vocab_size, info, shape = _start(args)
    result = run(model, vocab_size, turns=args.turns, policies=args.policies, shape=shape, repeats=args.repeats,
                 warmup=args.warmup, seed=args.seed)
    end = _finish(run_info, args, [r.get("load_avg_1m_after", 0.0) for by in result["per_policy"].values() for r in by.values()],
                  " The alternating packed/per-turn passes keep the speedup comparable but less certain; "
                  "speedup_cpu (process CPU seconds) is the steadier figure then.")
    data = {
        "benchmark": "learner",
        "started": end["started"],
        "command": command_line("experiments.bench.learner", argv),
        "wall_s": end["wall_s"],
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
        "machine": end["machine"],
        "notes": end["notes"] + NOTES,
    }
    if "group_shared" in (previous := _read_json(args.out)):  # written by --group: keep it
        data["group_shared"] = previous["group_shared"]
    path = write_json(args.out, data)
    print(json.dumps(data["headline"], indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
