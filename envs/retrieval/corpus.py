"""Corpus documents in the Search-R1 / MEM1 JSONL format: one object per line with `id` and
`contents`, where `contents` is the quoted title, a newline, then the text:
    {"id": "0", "contents": "\"Evan Morris\"\nEvan L. Morris (January 26, 1977 ..."}
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator


@dataclass(frozen=True)
class Document:
    id: str
    contents: str  # the raw Search-R1 field: '"Title"\ntext'

    @property
    def title(self) -> str:
        head = self.contents.split("\n", 1)[0].strip()
        return head[1:-1] if len(head) >= 2 and head[0] == head[-1] == '"' else head

    @property
    def text(self) -> str:
        parts = self.contents.split("\n", 1)
        return parts[1].strip() if len(parts) == 2 else parts[0].strip()

    @classmethod
    def make(cls, id: str, title: str, text: str) -> "Document":
        return cls(id=str(id), contents=f'"{title}"\n{text}')


@dataclass(frozen=True)
class Hit:
    document: Document
    score: float


def read_corpus_jsonl(path: str | Path) -> Iterator[Document]:
    """Yield documents; a bad line raises with the file and line number."""
    path = Path(path)
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                yield Document(id=str(obj["id"]), contents=str(obj["contents"]))
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ValueError(f"{path}:{lineno}: not a corpus line with 'id' and 'contents' ({e})") from None


def write_corpus_jsonl(documents: Iterable[Document], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for d in documents:
            f.write(json.dumps({"id": d.id, "contents": d.contents}, ensure_ascii=False) + "\n")
    return path


def format_passages(hits: list[Hit]) -> str:
    """Passages as the MEM1 reference shows them: 'Doc i(Title: ...) text', one per line."""
    return "\n".join(f"Doc {i}(Title: {h.document.title}) {h.document.text}" for i, h in enumerate(hits, 1))
