"""Turning finished episodes into the comparison people read: a table per (memory policy, N)
and plots of accuracy and peak tokens against the number of objectives.

Metric names are stable and namespaced (docs/architecture.md): `eval/*` task scores, `memory/*` token
accounting (docs/memory_policies.md), `rollout/*` behaviour. The same names go to MLflow, the CSV and the
console table, so a number can be traced from one to the other.
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Sequence

from policies.records import Episode, action_turns, valid_action_rate

# (metric, how to read it from one episode)
EPISODE_METRICS = {
    "eval/em": lambda e: e.info.get("em_mean", 0.0),
    "eval/em_sum": lambda e: e.info.get("em_sum", 0.0),
    "eval/f1": lambda e: e.info.get("f1_mean", 0.0),
    "eval/f1_sum": lambda e: e.info.get("f1_sum", 0.0),
    "eval/answered": lambda e: float(e.info.get("end_reason") == "answer"),
    "eval/return": lambda e: e.total_reward,
    "memory/peak_tokens": lambda e: e.info.get("peak_tokens", 0.0),
    "memory/mean_tokens": lambda e: e.info.get("mean_tokens", 0.0),
    "memory/peak_context_tokens": lambda e: e.info.get("peak_context_tokens", 0.0),
    "memory/attention_span": lambda e: e.info.get("attention_span", 0.0),
    "rollout/turns": lambda e: float(len(action_turns(e))),
    "rollout/searches": lambda e: float(sum(t.info.get("action") == "search" for t in e.turns)),
    "rollout/valid_action_rate": valid_action_rate,
    "rollout/context_overflow": lambda e: float(e.info.get("end_reason") == "context_overflow"),
}
# Task outcomes an env reports in its last step's info when its tasks have them (WebShop's
# score and whether it was 1.0, the toy env's): metric -> info key. A metric is reported when
# any episode of the evaluation carries its key; an episode without it (one that ended on a
# context overflow) counts as 0, like an unanswered QA task.
OUTCOME_METRICS = {"eval/success": "success", "eval/reward": "reward"}
TABLE_COLUMNS = ["eval/success", "eval/reward", "eval/em", "eval/f1", "eval/em_sum", "memory/peak_tokens", "memory/mean_tokens", "rollout/turns", "rollout/valid_action_rate"]


def aggregate(episodes: Iterable[Episode], keys: Sequence[str] = ("policy", "n")) -> list[dict]:
    """Mean of every episode metric per group (e.g. per memory policy and N), plus the max
    peak tokens and the episode count; success rate and mean task reward where the env
    reports them (OUTCOME_METRICS)."""
    episodes = list(episodes)
    outcomes = {name: key for name, key in OUTCOME_METRICS.items() if any(key in e.info for e in episodes)}
    groups: dict[tuple, list[Episode]] = defaultdict(list)
    for ep in episodes:
        groups[tuple(ep.info.get(k) for k in keys)].append(ep)
    rows = []
    for group, eps in sorted(groups.items(), key=lambda kv: tuple(str(x) if not isinstance(x, (int, float)) else f"{x:08.2f}" for x in kv[0])):
        row = dict(zip(keys, group))
        row["episodes"] = len(eps)
        for name, key in outcomes.items():
            row[name] = sum(float(e.info.get(key, 0.0)) for e in eps) / len(eps)
        for name, read in EPISODE_METRICS.items():
            row[name] = sum(float(read(e)) for e in eps) / len(eps)
        row["memory/max_peak_tokens"] = max(float(e.info.get("peak_tokens", 0.0)) for e in eps)
        rows.append(row)
    return rows


def write_csv(rows: list[dict], path: Path) -> Path:
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return path


def format_table(rows: list[dict], keys: Sequence[str] = ("policy", "n"), columns: Sequence[str] = TABLE_COLUMNS) -> str:
    """A fixed-width console table (columns no row has are left out)."""
    columns = [c for c in columns if any(c in r for r in rows)]
    header = list(keys) + [c.split("/", 1)[1] for c in columns]
    body = [[str(r[k]) for k in keys] + [_fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.rjust(w) if i >= len(keys) else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, body)])


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.0f}" if abs(v) >= 100 else f"{v:.3f}"
    return str(v)


def plot_vs_n(rows: list[dict], path: Path, metrics: Sequence[str], title: str, series: str = "policy") -> Path:
    """One panel per metric, one line per memory policy, N on a log2 x axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.8), squeeze=False)
    names = list(dict.fromkeys(r[series] for r in rows))
    ns = sorted({r["n"] for r in rows})
    for ax, metric in zip(axes[0], metrics):
        for name in names:
            pts = sorted((r["n"], r[metric]) for r in rows if r[series] == name)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
        ax.set_xscale("log", base=2)
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.set_xlabel("objectives per task (N)")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


LEARNING_CURVE = {"rollout/reward": "reward", "rollout/em": "EM", "rollout/valid_action_rate": "valid-action rate", "rollout/groups_with_signal": "groups with signal"}


def plot_learning_curve(history: Sequence[dict], path: Path, title: str = "RL training") -> Path:
    """One panel per training metric of LEARNING_CURVE present in `history` (one dict per
    iteration with an "iteration" key), against the iteration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    metrics = [m for m in LEARNING_CURVE if any(m in h for h in history)]
    fig, axes = plt.subplots(1, max(len(metrics), 1), figsize=(4 * max(len(metrics), 1), 3.4), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        pts = [(h["iteration"], h[metric]) for h in history if metric in h]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o")
        ax.set_xlabel("iteration")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_title(LEARNING_CURVE[metric])
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_episodes_jsonl(episodes: Iterable[Episode], path: Path, decode=None) -> Path:
    """One JSON object per episode: every turn's context ids, output, observation and info."""
    with path.open("w") as f:
        for ep in episodes:
            f.write(json.dumps(episode_to_json(ep), default=_json_default) + "\n")
    return path


def episode_to_json(ep: Episode) -> dict:
    turns = []
    for t in ep.turns:
        gen = ep.segments[t.generated]
        obs = ep.segments[t.observation] if t.observation is not None else None
        turns.append({
            "context": [[r.segment, *r.bounds(ep.segments)] for r in t.context],
            "context_ids": ep.context_ids(t.context),
            "output": gen.text,
            "output_ids": list(gen.token_ids),
            "logp": [round(x, 5) for x in t.logp],
            "finish_reason": t.finish_reason,
            "observation": obs.text if obs else None,
            "reward": t.reward,
            "info": dict(t.info),
        })
    return {"task_id": ep.task_id, "info": dict(ep.info), "prompt": ep.segments[0].text, "turns": turns}


def _json_default(o):
    if isinstance(o, float) and math.isnan(o):
        return None
    if hasattr(o, "tolist"):
        return o.tolist()
    return str(o)
