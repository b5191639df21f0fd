"""`mem1 compare [EXPERIMENT ...]`: one self-contained HTML page comparing the runs of an
MLflow store, logged back to the store as an artifact.

It reads what the other commands log (tracking.py's run structure), through MlflowClient only:

- evaluations (tag kind=eval): a parent run per `mem1 eval`, with perf/wall_s and
  perf/tokens_per_s, and a child per row label (tags memory_policy and model) whose metrics
  are logged with step = N; each (child, N) is one row of the table;
- training runs (kind=train): metrics per iteration (step = iteration), drawn as learning curves;
- sweeps (kind=sweep, `mem1 tune`): a parent with best/<metric> metrics, best.<key> tags and best.run_id,
  its trials the training runs whose mlflow.parentRunId is the sweep.

The page (tables, and plots as base64 PNGs: no external CSS, JS or files) goes to
`<output_dir>/compare.html` and into a small run with tag kind=compare in the first
experiment compared (the first one named, else the first that has a run on the page), so
the report of a store travels with it. A store with nothing to compare gets the page but no run.
"""

from __future__ import annotations

import base64
import html
import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from . import report, tracking

# The table's metric columns (metric -> header). An evaluation's children log the first ones
# per N; throughput and wall time belong to the whole evaluation (its parent run), so every
# row of one evaluation shows the same value there.
COLUMNS = {
    "eval/em": "EM",
    "eval/f1": "F1",
    "rollout/valid_action_rate": "valid-action rate",
    "memory/peak_tokens": "peak tokens / call",
    "memory/peak_context_tokens": "peak context tokens",
    "perf/tokens_per_s": "tokens/s (eval)",
    "perf/wall_s": "wall s (eval)",
}
QUALITY, MEMORY = "eval/em", "memory/peak_tokens"  # the Pareto view's axes: maximise, minimise
CURVES = {"rollout/reward": "reward", "rollout/em": "EM"}  # training metrics per iteration
SWEEP_METRICS = ("rollout/reward", "rollout/em", "memory/peak_tokens")  # shown for a sweep's best trial besides its objective
MISSING = "\u2013"  # en dash: a metric the run does not have
CHECK = "\u2713"


class CompareError(ValueError):
    """A store or experiment that is not there (the CLI prints it and exits with 2)."""


@dataclass
class Row:
    """One (evaluation, model label, memory policy, N)."""

    experiment: str
    run: str  # the evaluation's (parent) run name
    run_id: str  # the child run
    model: str
    policy: str
    n: int
    metrics: dict[str, float]
    pareto: bool = False  # no row at the same N has higher EM and lower peak tokens

    @property
    def label(self) -> str:  # as `mem1 eval` names its rows: mem1, mem1@sft
        return self.policy if self.model == "base" else f"{self.policy}@{self.model}"


@dataclass
class Curve:
    experiment: str
    run: str
    run_id: str
    points: dict[str, list[tuple[int, float]]]  # metric -> (iteration, value)


@dataclass
class Sweep:
    experiment: str
    run: str
    run_id: str
    trials: int
    objective: list[str]  # "metric (mode)"
    best_metrics: dict[str, float]
    best_values: dict[str, str]
    best_trial: str | None


@dataclass
class Comparison:
    tracking_uri: str
    experiments: list[str]
    rows: list[Row] = field(default_factory=list)
    curves: list[Curve] = field(default_factory=list)
    sweeps: list[Sweep] = field(default_factory=list)

    def experiments_with_runs(self) -> list[str]:
        used = {x.experiment for x in (*self.rows, *self.curves, *self.sweeps)}
        return [e for e in self.experiments if e in used]


@dataclass(frozen=True)
class Report:
    path: Path
    comparison: Comparison
    mlflow_run_id: str | None  # the kind=compare run holding the page; None when nothing was compared


def compare(tracking_uri: str, experiments: Sequence[str] | None = None, out: str | Path = "runs/compare.html", *,
            run_ids: Iterable[str] | None = None, log: bool = True) -> Report:
    """Write the report of `experiments` (default: all) in the store to `out`, and log it.
    `run_ids` keeps only those runs and their children (the main job's own runs)."""
    tracking.quiet()
    comparison = collect(tracking_uri, experiments, run_ids=run_ids)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_html(comparison), encoding="utf-8")
    run_id = _log(comparison, out, experiments) if log else None
    return Report(out, comparison, run_id)


# -- reading the store ----------------------------------------------------------------------


def collect(tracking_uri: str, experiments: Sequence[str] | None = None, *, run_ids: Iterable[str] | None = None) -> Comparison:
    from mlflow import MlflowClient

    _check_store(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri)
    exps = _experiments(client, experiments)
    names = {e.experiment_id: e.name for e in exps}
    runs = _search_runs(client, list(names)) if names else []
    if run_ids is not None:
        keep = set(run_ids)
        runs = [r for r in runs if r.info.run_id in keep or r.data.tags.get("mlflow.parentRunId") in keep]
    # oldest first, so an experiment's table reads in the order the runs were made
    order = {e: i for i, e in enumerate(names)}
    runs.sort(key=lambda r: (order[r.info.experiment_id], r.info.start_time or 0))
    by_id = {r.info.run_id: r for r in runs}
    kind = lambda r: r.data.tags.get("kind")
    parent = lambda r: by_id.get(r.data.tags.get("mlflow.parentRunId", ""))

    comparison = Comparison(tracking_uri, [e.name for e in exps])
    for r in runs:
        exp = names[r.info.experiment_id]
        if kind(r) == "eval" and "memory_policy" in r.data.tags:
            comparison.rows += _eval_rows(client, r, parent(r), exp)
        elif kind(r) == "train":
            points = {m: _history(client, r.info.run_id, m) for m in CURVES if m in r.data.metrics}
            if points:
                p = parent(r)  # a sweep's trial is named after its sweep too
                name = f"{p.info.run_name}/{r.info.run_name}" if p is not None else r.info.run_name
                comparison.curves.append(Curve(exp, name, r.info.run_id, {m: sorted(v.items()) for m, v in points.items()}))
        elif kind(r) == "sweep":
            trials = [c for c in runs if c.data.tags.get("mlflow.parentRunId") == r.info.run_id]
            comparison.sweeps.append(_sweep(r, trials, exp))
    _mark_pareto(comparison.rows)
    return comparison


def _check_store(uri: str) -> None:
    # MLflow would create an empty SQLite store at a mistyped path; say so instead
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
        raise CompareError(f"no MLflow store at {uri[len('sqlite:///'):]} (pass --tracking-uri, or --output-dir of the runs)")


def _experiments(client, wanted: Sequence[str] | None):
    found = []
    token = None
    while True:
        page = client.search_experiments(page_token=token)
        found += page
        token = page.token
        if not token:
            break
    if not wanted:
        return sorted(found, key=lambda e: (e.creation_time or 0, e.name))
    by_name = {e.name: e for e in found}
    missing = [w for w in wanted if w not in by_name]
    if missing:
        raise CompareError(f"no experiment {', '.join(map(repr, missing))} in the store; it has: {', '.join(sorted(by_name)) or 'none'}")
    return [by_name[w] for w in dict.fromkeys(wanted)]


def _search_runs(client, experiment_ids: list[str]):
    runs, token = [], None
    while True:
        page = client.search_runs(experiment_ids, page_token=token)
        runs += page
        token = page.token
        if not token:
            return runs


def _history(client, run_id: str, metric: str) -> dict[int, float]:
    """step -> value; a step logged twice keeps its newest value."""
    return {m.step: m.value for m in sorted(client.get_metric_history(run_id, metric), key=lambda m: m.timestamp)}


def _eval_rows(client, child, parent, experiment: str) -> list[Row]:
    per_n = {m: _history(client, child.info.run_id, m) for m in COLUMNS if m in child.data.metrics}
    run_level = {m: parent.data.metrics[m] for m in COLUMNS if parent is not None and m in parent.data.metrics and m not in per_n}
    ns = sorted({n for values in per_n.values() for n in values})
    tags = child.data.tags
    name = parent.info.run_name if parent is not None else child.info.run_name
    return [Row(experiment, name, child.info.run_id, tags.get("model", "base"), tags["memory_policy"], int(n),
                {**run_level, **{m: v[n] for m, v in per_n.items() if n in v}}) for n in ns]


def _sweep(run, trials, experiment: str) -> Sweep:
    metrics, tags, params = run.data.metrics, run.data.tags, run.data.params
    objective = [m for m in params.get("sweep.metric", "").split(",") if m]
    modes = [m for m in params.get("sweep.mode", "").split(",") if m]
    best = {k[len("best/"):]: v for k, v in metrics.items() if k.startswith("best/")}
    shown = [m for m in dict.fromkeys([*objective, *SWEEP_METRICS]) if m in best] if objective else sorted(best)
    # tune/sweep.py tags the parent with the best trial's searched values (JSON) and its run id
    values = {k[len("best."):]: v for k, v in sorted(tags.items()) if k.startswith("best.") and k not in ("best.run_id", "best.trial_id")}
    matches = [t.info.run_name for t in trials if t.info.run_id == tags.get("best.run_id")]
    goals = [f"{m} ({mode})" for m, mode in zip(objective, modes)] if len(modes) == len(objective) else objective
    return Sweep(experiment, run.info.run_name, run.info.run_id, len(trials), goals, {m: best[m] for m in shown}, values,
                 ", ".join(matches) or None)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[bool]:
    """Which (quality, memory) points no other point dominates (quality at least as high and
    memory at least as low, one of them strictly)."""
    return [not any(q2 >= q and m2 <= m and (q2 > q or m2 < m) for q2, m2 in points) for q, m in points]


def _mark_pareto(rows: list[Row]) -> None:
    # per N: a longer task costs more memory and scores lower, so only rows of one N compete
    for n in {r.n for r in rows}:
        scored = [r for r in rows if r.n == n and QUALITY in r.metrics and MEMORY in r.metrics]
        for r, front in zip(scored, pareto_front([(r.metrics[QUALITY], r.metrics[MEMORY]) for r in scored])):
            r.pareto = front


# -- the page -------------------------------------------------------------------------------

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 14px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; }
th { background: #f0f0f0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.pareto td { background: #eef7ee; }
figure { margin: 1.5em 0; }
img { max-width: 100%; border: 1px solid #ddd; }
.note { color: #666; font-size: 13px; }
"""


def render_html(c: Comparison) -> str:
    e = html.escape
    used = c.experiments_with_runs()
    others = [x for x in c.experiments if x not in used]
    parts = [
        "<!doctype html>", '<html lang="en"><head><meta charset="utf-8">', "<title>mem1: comparing runs</title>",
        f"<style>{_STYLE}</style></head><body>", "<h1>mem1: comparing runs</h1>",
        f'<p class="note">store <code>{e(c.tracking_uri)}</code>; experiments: {e(", ".join(used)) or "none"}'
        + (f" (nothing to compare in: {e(', '.join(others))})" if others else "")
        + f"; written {e(time.strftime('%Y-%m-%d %H:%M:%S'))}</p>",
        "<h2>Memory policies \u00d7 N</h2>",
    ]
    if c.rows:
        parts.append(_policy_table(c.rows))
        parts.append(f'<p class="note">{MISSING}: not logged by that run. Shaded rows are on the Pareto front of their N '
                     "(no other row has higher EM at lower peak tokens per call). Tokens/s and wall time are the whole evaluation's.</p>")
        parts += [_figure_html(title, png) for title, png in _eval_plots(c.rows)]
    else:
        parts.append('<p class="note">No evaluation runs (kind=eval).</p>')
    parts.append("<h2>Training: learning curves</h2>")
    if c.curves:
        parts.append(_figure_html("Per iteration of each training run (a sweep's trials are named after it)", _curves_png(c.curves)))
    else:
        parts.append(f'<p class="note">No training runs (kind=train) with {e(" or ".join(CURVES))}.</p>')
    parts.append("<h2>Sweeps: best trial</h2>")
    parts.append(_sweep_table(c.sweeps) if c.sweeps else '<p class="note">No sweeps (kind=sweep).</p>')
    parts.append("</body></html>")
    return "\n".join(parts)


def _figure_html(title: str, png: bytes) -> str:
    e = html.escape
    return f'<figure><img alt="{e(title)}" src="data:image/png;base64,{base64.b64encode(png).decode()}"><figcaption>{e(title)}</figcaption></figure>'


def _fmt(v: float) -> str:
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.1f}" if abs(v) >= 10 else f"{v:.3f}"


def _num(metric: str, v: float | None) -> str:
    """A metric cell: the exact value in data-value (what a test or a script reads), rounded on screen."""
    m = html.escape(metric)
    if v is None:
        return f'<td class="num" data-metric="{m}">{MISSING}</td>'
    return f'<td class="num" data-metric="{m}" data-value="{v!r}">{_fmt(v)}</td>'


def _policy_table(rows: list[Row]) -> str:
    e = html.escape
    keys = ("experiment", "run", "model", "policy", "n")
    head = "".join(f"<th>{h}</th>" for h in ("experiment", "run", "model", "memory policy", "N", *COLUMNS.values(), "Pareto"))
    body = []
    for r in rows:
        cells = "".join(f'<td data-key="{k}">{e(str(getattr(r, k)))}</td>' for k in keys)
        cells += "".join(_num(m, r.metrics.get(m)) for m in COLUMNS)
        cells += f'<td data-key="pareto" data-value="{int(r.pareto)}">{CHECK if r.pareto else ""}</td>'
        shade = ' class="pareto"' if r.pareto else ""
        body.append(f'<tr data-run-id="{e(r.run_id)}"{shade}>{cells}</tr>')
    return f'<table id="policies"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _sweep_table(sweeps: list[Sweep]) -> str:
    e = html.escape
    head = "".join(f"<th>{h}</th>" for h in ("experiment", "sweep", "trials", "objective", "best metrics", "best values", "best trial"))
    body = []
    for s in sweeps:
        best = "<br>".join(f'<span data-metric="{e(m)}" data-value="{v!r}">{e(m)} {_fmt(v)}</span>' for m, v in s.best_metrics.items())
        values = "<br>".join(f'<span data-param="{e(k)}">{e(k)} = {e(v)}</span>' for k, v in s.best_values.items())
        body.append(
            f'<tr data-run-id="{e(s.run_id)}"><td data-key="experiment">{e(s.experiment)}</td><td data-key="sweep">{e(s.run)}</td>'
            f'<td class="num" data-key="trials">{s.trials}</td><td data-key="objective">{e(", ".join(s.objective)) or MISSING}</td>'
            f'<td data-key="best_metrics">{best or MISSING}</td><td data-key="best_values">{values or MISSING}</td>'
            f'<td data-key="best_trial">{e(s.best_trial) if s.best_trial else MISSING}</td></tr>')
    return f'<table id="sweeps"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


# -- plots (PNG bytes) ----------------------------------------------------------------------


def _eval_plots(rows: list[Row]) -> list[tuple[str, bytes]]:
    # a line per row label; named after its run too when several evaluations share the plots
    several = len({(r.experiment, r.run) for r in rows}) > 1
    series = lambda r: f"{r.run}: {r.label}" if several else r.label
    out = []
    for metric, title in ((QUALITY, "Quality (EM) vs number of objectives"), (MEMORY, "Peak tokens per call vs number of objectives")):
        points = [{"series": series(r), "n": r.n, metric: r.metrics[metric]} for r in rows if metric in r.metrics]
        if points:
            buf = io.BytesIO()
            report.plot_vs_n(points, buf, [metric], title, series="series")  # the plot `mem1 eval` writes, over all runs
            out.append((title, buf.getvalue()))
    if any(QUALITY in r.metrics and MEMORY in r.metrics for r in rows):
        out.append(("Quality vs peak memory per N (ringed: the Pareto front)", _pareto_png(rows, series)))
    return out


def _figure(panels: int, height: float = 3.8):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, panels, figsize=(4.5 * panels, height), squeeze=False)
    return plt, fig, axes[0]


def _png(plt, fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _pareto_png(rows: list[Row], series) -> bytes:
    scored = [r for r in rows if QUALITY in r.metrics and MEMORY in r.metrics]
    ns = sorted({r.n for r in scored})
    names = list(dict.fromkeys(series(r) for r in scored))  # the order plot_vs_n colours them in
    plt, fig, axes = _figure(len(ns))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, n in zip(axes, ns):
        at_n = [r for r in scored if r.n == n]
        for i, name in enumerate(names):
            pts = [r for r in at_n if series(r) == name]
            if pts:
                ax.scatter([r.metrics[MEMORY] for r in pts], [r.metrics[QUALITY] for r in pts], color=colours[i % len(colours)], label=name, zorder=3)
        front = sorted((r.metrics[MEMORY], r.metrics[QUALITY]) for r in at_n if r.pareto)
        ax.plot([p[0] for p in front], [p[1] for p in front], "k--", lw=1, drawstyle="steps-post", zorder=2)
        ax.scatter([p[0] for p in front], [p[1] for p in front], s=160, facecolors="none", edgecolors="k", zorder=4)
        ax.set_title(f"N = {n}")
        ax.set_xlabel(MEMORY)
        ax.set_ylabel(QUALITY)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    return _png(plt, fig)


def _curves_png(curves: list[Curve]) -> bytes:
    metrics = [m for m in CURVES if any(m in c.points for c in curves)]
    plt, fig, axes = _figure(len(metrics), 3.4)
    import matplotlib.ticker

    several = len({c.experiment for c in curves}) > 1
    for ax, metric in zip(axes, metrics):
        for c in curves:
            if metric in c.points:
                pts = c.points[metric]
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{c.experiment}/{c.run}" if several else c.run)
        ax.set_title(CURVES[metric])
        ax.set_xlabel("iteration")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    return _png(plt, fig)


# -- logging the page -----------------------------------------------------------------------


def _log(c: Comparison, page: Path, named: Sequence[str] | None) -> str | None:
    from mlflow import MlflowClient

    target = c.experiments[0] if named else next(iter(c.experiments_with_runs()), None)
    if target is None:
        return None
    client = MlflowClient(tracking_uri=c.tracking_uri)
    exp_id = client.get_experiment_by_name(target).experiment_id
    run = client.create_run(exp_id, run_name=f"compare-{time.strftime('%Y%m%d-%H%M%S')}",
                            tags={"kind": "compare", "git_sha": tracking.git_sha() or "unknown"})
    try:
        client.log_param(run.info.run_id, "compare.experiments", tracking.param_value(",".join(c.experiments)))  # MLflow's length limit
        client.log_artifact(run.info.run_id, str(page))
    except BaseException:
        client.set_terminated(run.info.run_id, "FAILED")
        raise
    client.set_terminated(run.info.run_id)
    return run.info.run_id
