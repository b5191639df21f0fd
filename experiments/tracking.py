"""MLflow tracking: one place that knows the store layout, the run structure and the names.

Layout: a local SQLite store `<output_dir>/mlflow.db` with artifacts in
`<output_dir>/mlartifacts` unless a tracking URI is given (docs/operations.md: absolute paths,
experiment created on the driver with an absolute artifact location). Browse it with
    mlflow ui --backend-store-uri sqlite:///$PWD/runs/mlflow.db

Run structure of an evaluation: a parent run (the whole config as params, the comparison
table, plots and episode logs as artifacts) and one child run per memory policy whose
metrics are logged with step = N, so MLflow's charts show each metric against the number
of objectives and runs of different experiments compare by the same keys.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
from pathlib import Path
from typing import Any, Iterator, Mapping

log = logging.getLogger(__name__)


def default_tracking_uri(output_dir: str | Path) -> str:
    return f"sqlite:///{Path(output_dir).resolve() / 'mlflow.db'}"


# The user's MLFLOW_TRACKING_URI, read once at import: `mlflow.set_tracking_uri` writes that
# variable itself (for subprocesses), so reading it later would return our own last store.
_ENV_TRACKING_URI = os.environ.get("MLFLOW_TRACKING_URI") or None


def tracking_uri(configured: str | None, output_dir: str | Path) -> str:
    """The store a run logs to: `tracking.tracking_uri`, else the MLFLOW_TRACKING_URI the
    process started with (a cluster job's MLflow server), else `<output_dir>/mlflow.db`."""
    return configured or _ENV_TRACKING_URI or default_tracking_uri(output_dir)


def setup(configured: str | None, output_dir: str | Path, experiment: str) -> str:
    """Point MLflow at the store and make sure the experiment exists; returns its id."""
    import mlflow

    output_dir = Path(output_dir).resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    uri = tracking_uri(configured, output_dir)
    mlflow.set_tracking_uri(uri)
    found = mlflow.get_experiment_by_name(experiment)
    if found is not None:
        return found.experiment_id
    artifacts = (output_dir / "mlartifacts" / experiment).as_uri() if uri.startswith("sqlite:") else None
    return mlflow.create_experiment(experiment, artifact_location=artifacts)


def git_sha() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


@contextlib.contextmanager
def run(experiment_id: str, name: str, *, params: Mapping[str, Any] | None = None, tags: Mapping[str, str] | None = None,
        parent_run_id: str | None = None, run_id: str | None = None) -> Iterator[Any]:
    """Start (or resume, with run_id) a run; params are logged once, truncated to MLflow's
    limit; the run ends FAILED if the body raises."""
    import mlflow

    all_tags = {"git_sha": git_sha() or "unknown", **(tags or {})}
    with mlflow.start_run(run_id=run_id, experiment_id=None if run_id else experiment_id, run_name=None if run_id else name,
                          nested=parent_run_id is not None, parent_run_id=parent_run_id, tags=all_tags) as active:
        if params and run_id is None:
            mlflow.log_params({k: param_value(v) for k, v in params.items()})
        yield active


def param_value(v: Any) -> str:
    s = "" if v is None else str(v)
    return s if len(s) <= 6000 else s[:5997] + "..."


def log_metrics(metrics: Mapping[str, float], step: int | None = None, run_id: str | None = None) -> None:
    import mlflow

    clean = {k.replace(":", "_"): float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and v == v}
    if run_id is None:
        mlflow.log_metrics(clean, step=step)
    else:
        mlflow.MlflowClient().log_batch(run_id, metrics=[mlflow.entities.Metric(k, v, _now_ms(), step or 0) for k, v in clean.items()])


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


def log_artifacts(paths: list[Path], artifact_path: str | None = None) -> None:
    import mlflow

    for p in paths:
        if Path(p).exists():
            mlflow.log_artifact(str(p), artifact_path=artifact_path)


def quiet() -> None:
    """MLflow's own chatter (migrations, emoji links) is not for our console."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # mlflow resets its loggers to this level when imported
    for name in ("mlflow", "alembic", "sqlalchemy"):
        logging.getLogger(name).setLevel(logging.WARNING)
