"""Dense retrieval at scale: build time, size, recall and latency of faiss indexes, to choose
`retriever.faiss_index` (and `faiss_search_k`) for a corpus of millions of passages.

    python -m experiments.bench.retrieval                      # 1,000,000 vectors (tens of minutes on 2 cores)
    python -m experiments.bench.retrieval --n 100000 --out /tmp/retrieval.json

The corpus is synthetic, 384-d like MiniLM, float32 and L2-normalised: a mixture of
`--centres` (n / 20) unit centres that lie in a shared `--subspace`-d subspace, each vector its
centre plus noise in that subspace plus a little isotropic noise. Sentence embeddings are
clustered and of low intrinsic dimension; uniform random vectors are neither, and have no
near neighbours for an approximate index to find, so their recall says nothing. `--queries` held-out queries come
from the same mixture. Flat (exact) gives the ground truth: recall@1 is the share of
queries whose first hit is Flat's first, recall@10 the mean overlap with Flat's top 10.

Indexes are built as the retriever builds them (envs/retrieval/dense.py: inner product,
trained on at most `--train-size` vectors drawn with the same fixed seed, the search knob
set the same way), on the CPU: Flat, IVF<nlist>,Flat, IVF<nlist>,PQ32 (nprobe swept) and
HNSW32 (efSearch swept); nlist is 4096, or less on a corpus too small for it (39 training
vectors per list, faiss's own minimum). Per setting: recall, latency of one query at a time
(median and p95 over `--latency-queries`) and the throughput of one batch of all queries;
per index: train and add time and its serialized size. Writes
experiments/bench/results/retrieval.json with the settings, machine, versions, command and
an "analysis" of which index to pick when, written from the figures.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from envs.retrieval.dense import DEFAULT_FAISS_TRAIN_SIZE, new_faiss_index, search_parameter, set_search_k, train_faiss_index, training_rows
from experiments.bench import RESULTS_DIR, command_line, measured, package_versions, write_json

K = 10
PAPER_PASSAGES = 21_000_000  # the paper's Wikipedia corpus, for the extrapolated sizes
MAX_NLIST = 4096
MIN_TRAIN_PER_LIST = 39  # faiss's k-means warns below this many vectors per centroid
CHUNK = 100_000  # vectors generated at a time
# Noise norms around a unit centre. Chosen so the data is neither trivial nor hopeless: mean
# cosine of a query's first / tenth neighbour about 0.62 / 0.51 (MiniLM's top hits on a QA
# corpus score alike), and clusters overlap, so a query's neighbours span several IVF lists
# (at 0.6 / 0.2 every index found them all at the smallest setting).
SUBSPACE_NOISE = 1.0
ISOTROPIC_NOISE = 0.3
# Vectors per centre on average (the passages of one long article, say). The number of
# centres grows with the corpus, so the difficulty does not fall as it grows: with a fixed
# 2,000 centres, 100,000 vectors already put a query's ten neighbours in its own IVF list.
PER_CENTRE = 20


def mixture(n: int, dim: int, centres: int, subspace: int, seed: int, stream: int) -> np.ndarray:
    """`n` unit vectors of the mixture (see the module docstring); `stream` separates the
    corpus from the queries, `seed` fixes the centres and the subspace shared by both."""
    shape = np.random.default_rng(seed)
    basis = shape.standard_normal((subspace, dim), dtype=np.float32)
    means = _unit(shape.standard_normal((centres, subspace), dtype=np.float32) @ basis)
    rng = np.random.default_rng([seed, stream])
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, CHUNK):
        m = min(CHUNK, n - start)
        x = means[rng.integers(centres, size=m)]
        x += SUBSPACE_NOISE * _unit(rng.standard_normal((m, subspace), dtype=np.float32) @ basis)
        x += ISOTROPIC_NOISE * _unit(rng.standard_normal((m, dim), dtype=np.float32))
        out[start : start + m] = _unit(x)
    return out


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def default_nlist(n: int) -> int:
    """4096, or the largest power of two with MIN_TRAIN_PER_LIST vectors per list."""
    fit = max(1, n // MIN_TRAIN_PER_LIST)
    return min(MAX_NLIST, 2 ** int(math.log2(fit)))


def build(factory: str, corpus: np.ndarray, train_size: int) -> tuple[faiss.Index, dict[str, Any]]:
    index = new_faiss_index(corpus.shape[1], factory)
    start = time.perf_counter()
    if not index.is_trained:
        train_faiss_index(index, corpus[training_rows(len(corpus), train_size)], factory)
    train_s = time.perf_counter() - start
    fixed = faiss.serialize_index(index).nbytes  # codebooks, centroids: paid once, not per vector
    start = time.perf_counter()
    index.add(corpus)
    add_s = time.perf_counter() - start
    size = faiss.serialize_index(index).nbytes
    per_vector = (size - fixed) / len(corpus)
    return index, {
        "factory": factory, "train_s": round(train_s, 2), "add_s": round(add_s, 2), "build_s": round(train_s + add_s, 2),
        "bytes": int(size), "fixed_bytes": int(fixed), "bytes_per_vector": round(per_vector, 1),
        "gib_at_21m_passages": round((fixed + per_vector * PAPER_PASSAGES) / 2**30, 1),  # linear extrapolation
    }


def recall(found: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    at1 = float(np.mean(found[:, 0] == truth[:, 0]))
    at10 = float(np.mean([len(set(f) & set(t)) / K for f, t in zip(found[:, :K], truth[:, :K])]))
    return round(at1, 4), round(at10, 4)


def measure_search(index: faiss.Index, queries: np.ndarray, latency_queries: int) -> tuple[np.ndarray, dict[str, float]]:
    """The top-K of every query (one batch, timed), and single-query latencies."""
    index.search(queries[:1], K)  # warm-up
    start = time.perf_counter()
    _, found = index.search(queries, K)
    batch_s = time.perf_counter() - start
    latencies = []
    for q in queries[:latency_queries]:
        start = time.perf_counter()
        index.search(q[None], K)
        latencies.append(time.perf_counter() - start)
    ms = np.array(latencies) * 1000
    return found, {
        "latency_ms_p50": round(float(np.median(ms)), 3), "latency_ms_p95": round(float(np.percentile(ms, 95)), 3),
        "batch_qps": round(len(queries) / batch_s, 1),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    start = time.perf_counter()
    corpus = mixture(args.n, args.dim, args.centres, args.subspace, args.seed, stream=0)
    queries = mixture(args.queries, args.dim, args.centres, args.subspace, args.seed, stream=1)
    generate_s = time.perf_counter() - start
    print(f"generated {args.n} x {args.dim} vectors and {args.queries} queries in {generate_s:.1f} s", flush=True)
    nlist = args.nlist or default_nlist(args.n)
    factories = args.factories or ["Flat", f"IVF{nlist},Flat", f"IVF{nlist},PQ32", "HNSW32"]
    if factories[0] != "Flat":
        raise SystemExit("--factories must start with Flat: it is the ground truth")
    truth = None
    results = []
    for factory in factories:
        index, row = build(factory, corpus, args.train_size)
        print(f"{factory}: built in {row['build_s']} s (train {row['train_s']} s), {row['bytes'] / 2**20:.1f} MiB", flush=True)
        parameter = search_parameter(index)
        sweep = {"nprobe": args.nprobe, "efSearch": args.ef_search}.get(parameter, [None])
        row["parameter"] = parameter
        row["searches"] = []
        for search_k in sweep:
            set_search_k(index, search_k, parameter)
            found, timing = measure_search(index, queries, min(args.latency_queries, args.queries))
            if truth is None:
                truth = found
            at1, at10 = recall(found, truth)
            search = {"search_k": search_k, "recall_at_1": at1, "recall_at_10": at10, **timing}
            row["searches"].append(search)
            print(f"  {parameter or 'exhaustive'}={search_k}: recall@1 {at1} recall@10 {at10}, "
                  f"{timing['latency_ms_p50']} ms/query, {timing['batch_qps']} q/s batched", flush=True)
        results.append(row)
        del index
    return {"generate_s": round(generate_s, 1), "nlist": nlist, "indexes": results}


def analysis(indexes: list[dict[str, Any]], n: int) -> list[str]:
    """Which index to pick when, in sentences built from the figures."""
    def best(row, floor=0.9):  # the cheapest setting with recall@10 >= floor, else the most accurate
        good = [s for s in row["searches"] if s["recall_at_10"] >= floor]
        return good[0] if good else max(row["searches"], key=lambda s: s["recall_at_10"])

    def setting(row, s):
        return row["factory"] + (f" ({row['parameter']}={s['search_k']})" if s["search_k"] is not None else "")

    flat, others = indexes[0], indexes[1:]
    exact = flat["searches"][0]
    lines = [
        f"Flat is exact and needs no training: {flat['bytes_per_vector']:.0f} B per vector ({flat['bytes'] / 2**30:.2f} GiB at "
        f"{n:,} vectors, about {flat['gib_at_21m_passages']} GiB at the paper's 21M passages), {exact['latency_ms_p50']} ms per "
        f"single query (it scans every vector; the time grows with the corpus) and {exact['batch_qps']} queries/s batched."
    ]
    for row in others:
        s = best(row)
        sweep = ", ".join(f"{x['search_k']}: {x['recall_at_10']}" for x in row["searches"] if x["search_k"] is not None)
        text = (f"{setting(row, s)}: recall@1 {s['recall_at_1']}, recall@10 {s['recall_at_10']}, {s['latency_ms_p50']} ms per "
                f"query against Flat's {exact['latency_ms_p50']}, {row['bytes_per_vector']:.0f} B per vector (about "
                f"{row['gib_at_21m_passages']} GiB at 21M), built in {row['build_s']} s (training {row['train_s']} s)")
        text += f"; recall@10 by {row['parameter']}: {sweep}." if sweep else "."
        if "PQ" in row["factory"]:
            text += (f" It stores {flat['bytes_per_vector'] / row['bytes_per_vector']:.0f}x fewer bytes per vector than Flat, and "
                     "its codes' error bounds recall: past some nprobe it stops improving; more bytes per code (PQ64, PQ96) buy "
                     "recall back at proportionally more memory.")
        elif "HNSW" in row["factory"]:
            text += (" It keeps every vector plus a graph, so it is no smaller than Flat, needs no training, and stays on the "
                     "CPU (faiss-gpu cannot serve HNSW).")
        elif "IVF" in row["factory"]:
            text += (" Flat's size; it shows the recall IVF's coarse lists alone allow at each nprobe, before any compression, "
                     "and faiss-gpu serves it.")
        lines.append(text)
    accurate = [(row, s) for row in others for s in row["searches"] if s["recall_at_10"] >= 0.9]
    if accurate:
        row, s = min(accurate, key=lambda rs: rs[1]["latency_ms_p50"])
        if s["latency_ms_p50"] < exact["latency_ms_p50"]:
            lines.append(f"For recall@10 >= 0.9 the fastest single query is {setting(row, s)}, {s['latency_ms_p50']} ms against "
                         f"Flat's {exact['latency_ms_p50']}: pick it when search latency matters and its "
                         f"{row['bytes_per_vector']:.0f} B per vector fit in memory.")
        else:
            lines.append(f"At {n:,} vectors no approximate index reaching recall@10 >= 0.9 answers a query faster than Flat: "
                         "keep Flat at this size.")
    if others:
        small = min(others, key=lambda row: row["gib_at_21m_passages"])
        s = max(small["searches"], key=lambda x: x["recall_at_10"])
        lines.append(f"The smallest is {small['factory']}, about {small['gib_at_21m_passages']} GiB at 21M passages against "
                     f"Flat's {flat['gib_at_21m_passages']}: pick it when Flat does not fit in memory (the paper's corpus), "
                     f"accepting recall@1 {s['recall_at_1']} and recall@10 {s['recall_at_10']} at its best setting here.")
    lines.append("Set retriever.faiss_search_k to the chosen nprobe or efSearch: faiss's defaults (1 and 16) are its "
                 "fastest and least accurate settings, and changing it needs no rebuild.")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="corpus vectors")
    parser.add_argument("--dim", type=int, default=384, help="vector width (MiniLM's: 384)")
    parser.add_argument("--queries", type=int, default=1000, help="held-out queries (batched throughput uses all)")
    parser.add_argument("--latency-queries", type=int, default=200, help="queries timed one at a time")
    parser.add_argument("--centres", type=int, default=None, help=f"mixture components (default: n / {PER_CENTRE})")
    parser.add_argument("--subspace", type=int, default=64, help="width of the shared noise subspace (intrinsic dimension)")
    parser.add_argument("--train-size", type=int, default=DEFAULT_FAISS_TRAIN_SIZE, help="most training vectors (retriever.faiss_train_size)")
    parser.add_argument("--nlist", type=int, default=None, help="IVF lists (default: 4096, fewer on a small corpus)")
    parser.add_argument("--factories", nargs="+", default=None, help="faiss factory strings, Flat first (default: Flat, IVF<nlist>,Flat, IVF<nlist>,PQ32, HNSW32)")
    parser.add_argument("--nprobe", type=int, nargs="+", default=[8, 32, 128], help="IVF nprobe sweep")
    parser.add_argument("--ef-search", type=int, nargs="+", default=[32, 128], help="HNSW efSearch sweep")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "retrieval.json", help="the result JSON")
    parser.add_argument("--notes", default="", help="a remark to store with the result")
    args = parser.parse_args(argv)
    if args.n < 2 or args.queries < 1:
        raise SystemExit("--n must be >= 2 and --queries >= 1")

    args.centres = args.centres or max(1, args.n // PER_CENTRE)
    figures, info = measured(lambda: run(args))
    data = {
        "benchmark": "retrieval",
        "started": info["started"],
        "command": command_line("experiments.bench.retrieval", argv),
        "wall_s": info["wall_s"],
        "settings": {
            "n": args.n, "dim": args.dim, "queries": args.queries, "latency_queries": min(args.latency_queries, args.queries),
            "k": K, "centres": args.centres, "subspace": args.subspace, "train_size": args.train_size, "nlist": figures["nlist"],
            "nprobe": args.nprobe, "ef_search": args.ef_search, "seed": args.seed, "device": "cpu",
            "faiss_threads": faiss.omp_get_max_threads(),
            "data": f"unit vectors: centre (in the subspace) + {SUBSPACE_NOISE}-norm noise in the subspace + {ISOTROPIC_NOISE}-norm isotropic noise",
            "recall": "recall@1: first hit equals Flat's; recall@10: mean overlap with Flat's top 10",
            "latency": "one query per search call: median and p95; batch_qps: all queries in one call",
        },
        "generate_s": figures["generate_s"],
        "indexes": figures["indexes"],
        "analysis": analysis(figures["indexes"], args.n),
        "versions": {"faiss": faiss.__version__, **package_versions(("faiss-cpu", "faiss-gpu-cu12", "numpy"))},
        "machine": info["machine"],
        "notes": ([args.notes] if args.notes else []) + info["notes"],
    }
    path = write_json(args.out, data)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
