"""The rules by which a training run stops itself instead of training on garbage: an env
runner that misses `training.sample_timeout_s` (with `training.on_sample_timeout: stop`) and
a retriever that fails more than `training.max_search_error_rate` of an iteration's searches.
The CLI reports them as one line (exit code 1); the driver writes a checkpoint of the last
finished iteration first, so `--resume` continues once the cause is fixed."""

from __future__ import annotations


class RunStopped(RuntimeError):
    """A run stopped by one of its own fault rules (not a bug: the message says what to fix)."""


class SampleTimeoutError(RunStopped):
    """Env runners missed training.sample_timeout_s and training.on_sample_timeout is 'stop'."""


class SearchFailureError(RunStopped):
    """Too many of an iteration's searches failed: the retriever is down or unreachable."""


def check_search_errors(metrics: dict[str, float], max_rate: float | None, retriever: str, iteration: int) -> None:
    """Raise SearchFailureError when the iteration's failed-search share is above `max_rate`
    (failed searches become observations, so without this a dead retriever trains silently)."""
    rate = metrics.get("rollout/search_error_rate", 0.0)
    if max_rate is not None and rate > max_rate:
        raise SearchFailureError(
            f"iteration {iteration}: {rate:.0%} of the searches failed ({metrics.get('rollout/search_errors', 0):.0f}), "
            f"above training.max_search_error_rate={max_rate}; is the retriever at {retriever} up?")
