"""The on-disk index cache: built once and loaded after, keyed by the corpus contents,
written atomically so a crashed build never leaves an index that loads."""

import json
import os
import socket
import subprocess
import sys

import pytest

from envs.retrieval import BM25Index, build_or_load_index, write_corpus_jsonl
from envs.retrieval.corpus import Document
from envs.retrieval.index import MANIFEST_FILE, cache_folder, corpus_digest

from .conftest import make_documents


@pytest.fixture
def count_builds(monkeypatch):
    """Counts real BM25 builds (the build still runs)."""
    calls = []
    original = BM25Index.build.__func__

    def counting_build(cls, documents):
        calls.append(len(documents))
        return original(cls, documents)

    monkeypatch.setattr(BM25Index, "build", classmethod(counting_build))
    return calls


def index_folders(root):
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def test_second_call_loads_without_building(corpus_path, count_builds):
    first = build_or_load_index(corpus_path, "bm25")
    assert count_builds == [30]
    root = corpus_path.parent / "corpus.jsonl.index"
    (folder,) = index_folders(root)
    assert folder.startswith("bm25-")
    manifest = json.loads((root / folder / MANIFEST_FILE).read_text())
    assert manifest["corpus_sha256"] == corpus_digest(corpus_path) and manifest["num_docs"] == 30

    second = build_or_load_index(corpus_path, "bm25")
    assert count_builds == [30]  # loaded, not rebuilt
    query = ["Tarnwick telescope galaxies"]
    assert second.search(query, 3) == first.search(query, 3)
    assert second.search(query, 1)[0][0].document.title == "Tarnwick Observatory"


def test_changed_corpus_rebuilds_even_with_same_size_and_mtime(corpus_path, count_builds):
    build_or_load_index(corpus_path, "bm25")
    stat = corpus_path.stat()
    text = corpus_path.read_text()
    edited = text.replace("Lake Verrin", "Lake Quorns")  # same length: size and mtime kept below
    assert len(edited) == len(text)
    corpus_path.write_text(edited)
    os.utime(corpus_path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert corpus_path.stat().st_size == stat.st_size and corpus_path.stat().st_mtime_ns == stat.st_mtime_ns

    index = build_or_load_index(corpus_path, "bm25")
    assert count_builds == [30, 30]
    assert index.search(["Quorns trout"], 1)[0][0].document.title == "Lake Quorns"
    assert len(index_folders(corpus_path.parent / "corpus.jsonl.index")) == 2


def test_cache_dir_holds_the_index_instead_of_the_corpus_folder(corpus_path, tmp_path, count_builds):
    cache = tmp_path / "cache"
    build_or_load_index(corpus_path, "bm25", cache_dir=cache)
    build_or_load_index(corpus_path, "bm25", cache_dir=cache)
    assert count_builds == [30]
    assert [n[:5] for n in index_folders(cache)] == ["bm25-"]
    assert not (corpus_path.parent / "corpus.jsonl.index").exists()


def test_crashed_build_leaves_nothing_that_loads(corpus_path, monkeypatch):
    original_save = BM25Index.save

    def crashing_save(self, folder):
        original_save(self, folder)  # files are written, then the process "dies"
        raise OSError("disk full")

    monkeypatch.setattr(BM25Index, "save", crashing_save)
    with pytest.raises(OSError, match="disk full"):
        build_or_load_index(corpus_path, "bm25")
    root = corpus_path.parent / "corpus.jsonl.index"
    assert index_folders(root) == []  # neither a final folder nor the temporary one

    monkeypatch.setattr(BM25Index, "save", original_save)
    index = build_or_load_index(corpus_path, "bm25")
    assert index.search(["Falkreth moat"], 1)[0][0].document.title == "Falkreth Castle"
    assert all((root / f / MANIFEST_FILE).is_file() for f in index_folders(root))


def test_temporary_folder_of_a_dead_build_is_removed(corpus_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    root = corpus_path.parent / "corpus.jsonl.index"
    name = cache_folder(root, "bm25", corpus_digest(corpus_path)).name
    stale = root / f"{name}.tmp-{dead.pid}@{socket.gethostname()}-abc_1"
    other_host = root / f"{name}.tmp-{dead.pid}@another-host.example-xyz"  # may still be building
    for temp in (stale, other_host):
        temp.mkdir(parents=True)
        (temp / "data.csc.index.npy").write_bytes(b"half written")
    build_or_load_index(corpus_path, "bm25")
    assert index_folders(root) == sorted([name, other_host.name])


def test_unreadable_cached_index_names_the_folder(corpus_path):
    build_or_load_index(corpus_path, "bm25")
    (folder,) = (corpus_path.parent / "corpus.jsonl.index").iterdir()
    (folder / "data.csc.index.npy").write_bytes(b"garbage")
    with pytest.raises(RuntimeError, match=f"{folder.name}.*delete that folder"):
        build_or_load_index(corpus_path, "bm25")


def test_bad_arguments_name_what_is_wrong(tmp_path, corpus_path):
    with pytest.raises(ValueError, match="'sparse'.*bm25, dense, hybrid"):
        build_or_load_index(corpus_path, "sparse")
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        build_or_load_index(tmp_path / "missing.jsonl", "bm25")
    empty = write_corpus_jsonl([], tmp_path / "empty.jsonl")
    with pytest.raises(ValueError, match="empty.jsonl.*no documents"):
        build_or_load_index(empty, "bm25")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "1", "contents": "ok"}\n{"id": "2"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        build_or_load_index(bad, "bm25")


def test_corpus_digest_streams_the_whole_file(tmp_path):
    docs = make_documents() + [Document.make("x", "Tail", "changed only at the end")]
    a = write_corpus_jsonl(docs, tmp_path / "a.jsonl")
    b = write_corpus_jsonl(docs[:-1] + [Document.make("x", "Tail", "changed only at the enD")], tmp_path / "b.jsonl")
    assert corpus_digest(a, chunk_bytes=64) == corpus_digest(a) != corpus_digest(b)
