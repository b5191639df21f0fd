"""The retrieval benchmark end to end at a tiny size: its result JSON has every index with its
settings, recall against Flat (Flat's own is 1), timings, sizes and an analysis. Numbers
other than Flat's recall are only range-checked (machines differ)."""

import json

import numpy as np
import pytest

from experiments.bench.retrieval import PAPER_PASSAGES, default_nlist, main, mixture

# PQ16np: polysemous training (faiss's default for PQ) alone takes ~40 s on 2 cores, at any size
FACTORIES = ["Flat", "IVF32,PQ16np", "IVF32,Flat", "HNSW16"]


def test_benchmark_writes_recall_timings_and_sizes(tmp_path):
    out = tmp_path / "r.json"
    argv = ["--n", "5000", "--queries", "50", "--latency-queries", "20", "--factories", *FACTORIES,
            "--nprobe", "4", "32", "--ef-search", "32", "--out", str(out)]
    assert main(argv) == 0
    data = json.loads(out.read_text())
    assert data["benchmark"] == "retrieval" and data["command"].endswith("--out " + str(out))
    assert data["settings"]["n"] == 5000 and data["settings"]["latency_queries"] == 20
    assert {"cpu", "cores"} <= set(data["machine"]) and data["versions"]["faiss"]
    assert [row["factory"] for row in data["indexes"]] == FACTORIES
    by_factory = {row["factory"]: row for row in data["indexes"]}

    (flat,) = by_factory["Flat"]["searches"]
    assert flat["search_k"] is None and flat["recall_at_1"] == flat["recall_at_10"] == 1.0  # the ground truth
    assert by_factory["Flat"]["bytes_per_vector"] == 384 * 4  # float32 vectors, nothing else
    assert [s["search_k"] for s in by_factory["IVF32,Flat"]["searches"]] == [4, 32]
    assert by_factory["IVF32,Flat"]["searches"][-1]["recall_at_10"] == 1.0  # nprobe 32 of 32 lists: exhaustive
    assert [s["search_k"] for s in by_factory["HNSW16"]["searches"]] == [32]
    assert by_factory["IVF32,PQ16np"]["bytes_per_vector"] == pytest.approx(16 + 8, abs=1)  # a 16-byte code, an int64 id
    for row in data["indexes"]:
        assert row["build_s"] >= row["train_s"] >= 0 and row["bytes"] > 0
        assert row["gib_at_21m_passages"] >= row["bytes_per_vector"] * PAPER_PASSAGES / 2**30 * 0.99
        for s in row["searches"]:
            assert 0.0 <= s["recall_at_1"] <= 1.0 and 0.0 <= s["recall_at_10"] <= 1.0
            assert 0 < s["latency_ms_p50"] <= s["latency_ms_p95"] and s["batch_qps"] > 0
    assert by_factory["IVF32,PQ16np"]["train_s"] > 0 and by_factory["HNSW16"]["train_s"] == 0  # only IVF/PQ train
    assert len(data["analysis"]) >= len(FACTORIES) and all(isinstance(line, str) and line for line in data["analysis"])
    assert "IVF32,PQ16np" in " ".join(data["analysis"])


def test_synthetic_data_is_clustered_unit_vectors_and_queries_are_held_out():
    corpus, queries = mixture(2000, 384, 20, 64, seed=0, stream=0), mixture(100, 384, 20, 64, seed=0, stream=1)
    assert corpus.dtype == np.float32 and corpus.shape == (2000, 384)
    assert np.allclose(np.linalg.norm(corpus, axis=1), 1.0, atol=1e-5)
    best = (queries @ corpus.T).max(axis=1)
    assert best.min() > 0.4  # every query has a near neighbour (among random 384-d unit vectors: ~0.18)
    assert not np.isclose(best, 1.0).any()  # none is a corpus vector
    assert np.array_equal(corpus, mixture(2000, 384, 20, 64, seed=0, stream=0))  # fixed by the seed


def test_default_nlist_keeps_39_training_vectors_per_list():
    assert default_nlist(1_000_000) == 4096 and default_nlist(100_000) == 2048 and default_nlist(5000) == 128
