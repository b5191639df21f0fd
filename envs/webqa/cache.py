"""On-disk cache of search results and fetched pages: one JSON file per key.

    cache = ResultCache("runs/webqa-cache")
    key = ["searxng", "http://host/search", [], "capital of france", 3]
    cache.get("search", key)          # None: a miss
    cache.put("search", key, [...])   # atomic; later gets (any process) return it

Layout: `<root>/<namespace>/<h[:2]>/<h>.json` where h is the SHA-256 of the key as JSON;
each file holds {"format", "key", "created", "value"}. A get compares the stored key with
the asked one, so a hash collision or a hand-edited file is a miss, never a wrong answer.

Why a JSON file per key and not SQLite: rollouts run in several processes at once (Ray env
runners, parallel evals) that share this folder. A file written to a temporary name and
renamed into place (os.replace, atomic on POSIX) needs no locks, so readers never see half
an entry and concurrent writers of the same key just both win with identical contents;
SQLite would need busy-timeouts under concurrent writers and its locking is unreliable on
network file systems, where shared run folders often live. Entries stay inspectable with
`cat`. The cost is one small file per distinct query (tens of thousands for an RL run, split
over 256 subfolders), which file systems handle well.

Entries never expire: a rerun sees the same results (reproducible evaluation). Delete the
folder, or a namespace under it, to search afresh. Only successes are stored; a failed
search is retried by the next call.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CACHE_FORMAT = 1  # bump when the entry layout changes; older entries become misses


class ResultCache:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OSError(f"cannot create the web-search cache folder {self.root} ({e}); set env.cache_dir to a writable folder") from None
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()

    def path(self, namespace: str, key: Any) -> Path:
        digest = hashlib.sha256(json.dumps(key, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
        return self.root / namespace / digest[:2] / f"{digest}.json"

    def get(self, namespace: str, key: Any) -> Any | None:
        """The stored value, or None on a miss (absent, other format, other key, unreadable)."""
        path = self.path(namespace, key)
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
            found = entry.get("format") == CACHE_FORMAT and entry.get("key") == json.loads(json.dumps(key))
        except FileNotFoundError:
            found = False
        except (OSError, ValueError, AttributeError) as e:  # truncated by a crash outside our writes, or edited
            log.warning("ignoring unreadable cache entry %s (%s)", path, e)
            found = False
        with self._lock:
            if found:
                self.hits += 1
            else:
                self.misses += 1
        return entry["value"] if found else None

    def put(self, namespace: str, key: Any, value: Any) -> Path:
        """Store `value` (JSON-serialisable) under `key`, atomically."""
        path = self.path(namespace, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        entry = {"format": CACHE_FORMAT, "key": key, "created": time.time(), "value": value}
        fd, temp = tempfile.mkstemp(prefix=f".{path.stem[:8]}-", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(entry, f, ensure_ascii=False)
            os.replace(temp, path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        return path

    def __len__(self) -> int:
        return sum(1 for _ in self.root.glob("*/*/*.json"))

    def __repr__(self) -> str:
        return f"ResultCache({str(self.root)!r}, hits={self.hits}, misses={self.misses})"
