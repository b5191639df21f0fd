"""The dense index's faiss factory string (retriever.faiss_index): approximate indexes (IVF,
HNSW) agree with the exact one on the generated world's passages, the factory string is
part of the cache key while the search-time knob is not, and a bad string is a config error."""

import json

import faiss
import pytest

from envs.data import generate_world
from envs.retrieval import build_or_load_index, write_corpus_jsonl
from envs.retrieval.dense import FaissOptions
from envs.retrieval.index import MANIFEST_FILE
from experiments.config import ConfigError, EvalConfig, validate

NUM_DOCS = 120  # enough for 16 IVF lists of ~8 passages; each build encodes them once (~3 s)
APPROXIMATE = {"IVF16,Flat": 4, "HNSW16": None}  # factory: search_k (nprobe 4 of 16 lists)


@pytest.fixture(scope="module")
def world_corpus(tmp_path_factory):
    documents = list(generate_world(0, "small").documents)[:NUM_DOCS]
    return write_corpus_jsonl(documents, tmp_path_factory.mktemp("world") / "corpus.jsonl"), documents


@pytest.fixture(scope="module")
def indexes(world_corpus):
    """Flat and each approximate index over the corpus, built once (cached beside it)."""
    path, _ = world_corpus
    built = {"Flat": build_or_load_index(path, "dense")}
    for factory, search_k in APPROXIMATE.items():
        built[factory] = build_or_load_index(path, "dense", faiss_options=FaissOptions(factory, search_k=search_k))
    return built


def top1(index, queries):
    return [hits[0].document.id for hits in index.search(queries, topk=1)]


def test_approximate_indexes_find_the_exact_top1_for_most_queries(indexes, world_corpus):
    _, documents = world_corpus
    queries = [d.title for d in documents]  # short queries; several passages mention each name
    exact = top1(indexes["Flat"], queries)
    assert type(indexes["Flat"].index) is faiss.IndexFlat
    assert type(indexes["IVF16,Flat"].index) is faiss.IndexIVFFlat and indexes["IVF16,Flat"].index.nlist == 16
    assert type(indexes["HNSW16"].index) is faiss.IndexHNSWFlat
    for factory in APPROXIMATE:
        agree = sum(a == b for a, b in zip(exact, top1(indexes[factory], queries))) / len(queries)
        assert agree >= 0.75, (factory, agree)  # measured: 0.84 for IVF16 at nprobe 4, 1.0 for HNSW16


def test_factory_string_keys_the_cache_and_search_k_is_set_at_load(indexes, world_corpus):
    path, _ = world_corpus
    root = path.parent / f"{path.name}.index"
    folders = sorted(root.iterdir())
    assert len(folders) == 3  # one folder per factory string
    settings = sorted(json.loads((f / MANIFEST_FILE).read_text())["settings"] for f in folders)
    assert [s.split(":")[0] for s in settings] == ["faiss=Flat", "faiss=HNSW16", "faiss=IVF16,Flat,train=262144,seed=0"]

    # search_k is applied at load, not baked in: the same folder serves nprobe 16 and faiss's default 1
    for search_k, nprobe in [(16, 16), (None, 1)]:
        loaded = build_or_load_index(path, "dense", faiss_options=FaissOptions("IVF16,Flat", search_k=search_k))
        assert faiss.extract_index_ivf(loaded.index).nprobe == nprobe
    # a different training sample size is a different IVF index; HNSW does not train, so it is not
    build_or_load_index(path, "dense", faiss_options=FaissOptions("IVF16,Flat", train_size=100))
    build_or_load_index(path, "dense", faiss_options=FaissOptions("HNSW16", train_size=100))
    assert len(list(root.iterdir())) == 4


def test_more_ivf_lists_than_passages_is_a_clear_error(tmp_path, world_corpus):
    _, documents = world_corpus
    path = write_corpus_jsonl(documents[:20], tmp_path / "tiny.jsonl")
    with pytest.raises(ValueError, match=r"'IVF64,Flat' cannot be trained on 20 vectors.*fewer IVF lists"):
        build_or_load_index(path, "dense", faiss_options=FaissOptions("IVF64,Flat"))


@pytest.mark.parametrize(
    "retriever, key, message",
    [
        ({"faiss_index": "IVF4096,PQ"}, "retriever.faiss_index", "could not parse"),
        ({"faiss_index": "IVF4096,PQ7"}, "retriever.faiss_index", "multiple of the number of subquantizers"),
        ({"faiss_index": "Flat", "faiss_search_k": 8}, "retriever.faiss_search_k", "no search-time parameter"),
    ],
)
def test_bad_faiss_settings_are_config_errors_naming_the_key(retriever, key, message):
    with pytest.raises(ConfigError, match=rf"{key} = .*{message}.*") as e:
        validate({"retriever": retriever}, EvalConfig)
    if key == "retriever.faiss_index":
        assert "IVF4096,PQ32" in str(e.value)  # the examples


def test_good_faiss_settings_reach_the_options():
    config = validate({"retriever": {"faiss_index": "IVF4096,PQ32", "faiss_search_k": 32}}, EvalConfig)
    assert config.retriever.faiss_options() == FaissOptions("IVF4096,PQ32", search_k=32)
    assert validate({}, EvalConfig).retriever.faiss_options() == FaissOptions()  # exact Flat by default
