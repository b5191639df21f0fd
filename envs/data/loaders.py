"""Readers and writers for the real QA data formats, so real data and the generated world
flow through the same `QAItem` / `Task` interfaces (envs/tasks.py).

    items = load_items("hotpot_dev_distractor_v1.json")      # HotpotQA JSON -> QAItems (hops=2)
    items = load_items("nq_search/test.parquet")             # Search-R1 parquet -> QAItems
    tasks = load_tasks("nq_hotpotqa_train_multi_3/train.parquet")  # MEM1 multi-objective -> Tasks
    kind, records = read_data_file(path)                     # either, as the file holds them
    write_tasks_parquet(tasks, "tasks/test_n16.parquet")     # loads in the MEM1 reference too
    docs = hotpotqa_documents("hotpot_dev_distractor_v1.json")  # contexts -> corpus Documents

Formats, as the reference scripts write them (facts of format only):
- HotpotQA: a JSON list of {_id, question, answer, type, level, supporting_facts,
  context: [[title, [sentence, ...]], ...]}; sentences after the first carry their own
  leading space, so a paragraph is their concatenation.
- Search-R1 (scripts/data_process/nq_search.py): one question per row; columns id,
  question, golden_answers (list of strings), data_source, prompt ([{role, content}]),
  ability, reward_model ({style, ground_truth: {target: [...]}}), extra_info ({split, index}).
- MEM1 multi-objective (Mem1/gen_data/data_process/qa_search_*_merge_multi.py): one task
  per row; columns data_source, prompt, ability, reward_model with ground_truth.target a
  list of answer lists (one per question), extra_info ({split, indices}). The questions
  live only in the prompt text: each gets a '?' if it lacks one, they are joined with
  "; " and appended after "Answer the following questions: ".
  So the separator is really "?; ", and this reader splits there (after the last
  "Answer the following questions:"). A question may contain ';' (only "?; " splits);
  one that contains "?; " itself cannot be told apart, and the count check against the
  target lists catches it with an error naming the file and row.

Our writers add fields the reference ignores (extra_info.task_id, extra_info.meta as
JSON, extra_info.index, a `hops` column), so our files round-trip exactly and still load
in the reference. Format detection: a '.json' file (or one starting with '[') is
HotpotQA; a parquet file whose reward_model.ground_truth.target is a list of lists is
MEM1 multi-objective, otherwise Search-R1. Every problem with a file (missing, unreadable,
a missing column or one of the wrong type, a bad row) is a DataFormatError naming the file
and the column or row.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any, Iterable, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from ..retrieval.corpus import Document
from ..tasks import QAItem, Task

QUESTIONS_MARKER = "Answer the following questions:"
DEFAULT_TASK_INSTRUCTION = (
    "Answer every question below. Search for one question at a time, and give one short "
    "answer per question, in question order, separated by semicolons.\n\n"
)
DEFAULT_ITEM_INSTRUCTION = "Answer the given question, searching for what you do not know. Give a short answer.\n\n"
# Search-R1 / FlashRAG sources whose questions need more than one hop.
MULTI_HOP_SOURCES = {"hotpotqa": 2, "2wikimultihopqa": 2, "musique": 2, "bamboogle": 2}

_PROMPT_TYPE = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
ITEMS_SCHEMA = pa.schema([
    ("id", pa.string()), ("question", pa.string()), ("golden_answers", pa.list_(pa.string())),
    ("data_source", pa.string()), ("prompt", _PROMPT_TYPE), ("ability", pa.string()),
    ("reward_model", pa.struct([
        ("style", pa.string()), ("ground_truth", pa.struct([("target", pa.list_(pa.string()))])),
    ])),
    ("extra_info", pa.struct([("split", pa.string()), ("index", pa.int64())])),
    ("hops", pa.int64()),
])  # fmt: skip
TASKS_SCHEMA = pa.schema([
    ("data_source", pa.string()), ("prompt", _PROMPT_TYPE), ("ability", pa.string()),
    ("reward_model", pa.struct([
        ("style", pa.string()), ("ground_truth", pa.struct([("target", pa.list_(pa.list_(pa.string())))])),
    ])),
    ("extra_info", pa.struct([
        ("split", pa.string()), ("indices", pa.list_(pa.int64())), ("index", pa.int64()),
        ("task_id", pa.string()), ("meta", pa.string()),
    ])),
])  # fmt: skip


class DataFormatError(ValueError):
    """A data file that is not in the format it claims; the message names file and field."""


class DataFileNotFoundError(DataFormatError, FileNotFoundError):
    """A data file that does not exist (both a DataFormatError and a FileNotFoundError)."""


# --- HotpotQA ---------------------------------------------------------------------------


def _read_hotpotqa_records(path: Path) -> list[dict[str, Any]]:
    try:
        with path.open(encoding="utf-8") as f:
            records = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataFormatError(
            f"{path}: not valid JSON ({e}); a HotpotQA file is one JSON list of question objects"
        ) from None
    except OSError as e:
        raise DataFormatError(f"{path}: cannot be read ({e.strerror})") from None
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise DataFormatError(f"{path}: expected a JSON list of HotpotQA question objects, got {type(records).__name__}")
    return records


def _field(record: dict[str, Any], key: str, path: Path, i: int, hint: str = "") -> Any:
    if key not in record:
        raise DataFormatError(f"{path}: record {i} has no {key!r}{hint}")
    return record[key]


def read_hotpotqa(path: str | Path) -> list[QAItem]:
    """HotpotQA dev/train JSON -> QAItems (hops=2, source="hotpotqa")."""
    path = Path(path)
    items = []
    for i, r in enumerate(_read_hotpotqa_records(path)):
        answer = _field(r, "answer", path, i, " (HotpotQA test files carry no answers; use a dev or train file)")
        item_id, question = str(_field(r, "_id", path, i)), str(_field(r, "question", path, i))
        try:
            items.append(QAItem(id=item_id, question=question, answers=(str(answer),), source="hotpotqa", hops=2))
        except ValueError as e:  # an empty question
            raise DataFormatError(f"{path}: record {i}: {e}") from None
    return items


def hotpotqa_documents(source: str | Path | Sequence[dict[str, Any]], *, start_id: int = 0) -> list[Document]:
    """HotpotQA contexts -> corpus Documents (title, sentences joined), first title wins."""
    path = Path("<records>") if not isinstance(source, (str, Path)) else Path(source)
    records = _read_hotpotqa_records(path) if isinstance(source, (str, Path)) else source
    seen: set[str] = set()
    docs = []
    for i, r in enumerate(records):
        for j, pair in enumerate(_field(r, "context", path, i)):
            if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and isinstance(pair[1], list)):
                raise DataFormatError(f"{path}: record {i} context[{j}] is not [title, [sentences]]")
            title, sentences = str(pair[0]), [str(s) for s in pair[1]]
            if title in seen:
                continue
            seen.add(title)
            # HotpotQA keeps each later sentence's leading space; add one only where missing.
            text = "".join(s if k == 0 or s[:1].isspace() else " " + s for k, s in enumerate(sentences)).strip()
            docs.append(Document.make(str(start_id + len(docs)), title, text))
    return docs


# --- parquet (Search-R1 single questions, MEM1 multi-objective tasks) -------------------


def _struct_child(t: pa.DataType, name: str) -> pa.DataType | None:
    if not pa.types.is_struct(t) or t.get_field_index(name) < 0:
        return None
    return t.field(name).type


def _is_list(t: pa.DataType | None) -> bool:
    return t is not None and (pa.types.is_list(t) or pa.types.is_large_list(t))


def _target_type(schema: pa.Schema) -> pa.DataType | None:
    if "reward_model" not in schema.names:
        return None
    return _struct_child(_struct_child(schema.field("reward_model").type, "ground_truth") or pa.null(), "target")


def detect_format(path: str | Path) -> str:
    """'hotpotqa', 'search_r1' or 'mem1' (see the module docstring for the rules)."""
    path = Path(path)
    if not path.exists():
        raise DataFileNotFoundError(f"{path}: data file does not exist")
    if not path.is_file():
        raise DataFormatError(f"{path}: not a file; a data file is one parquet or JSON file")
    try:
        with path.open("rb") as f:
            head = f.read(4)
    except OSError as e:
        raise DataFormatError(f"{path}: cannot be read ({e.strerror})") from None
    if head == b"PAR1":
        schema = _schema(path)
        target = _target_type(schema)
        if _is_list(target) and _is_list(target.value_type):
            return "mem1"
        if "golden_answers" in schema.names or _is_list(target):
            return "search_r1"
        raise DataFormatError(
            f"{path}: parquet with columns {schema.names} is neither Search-R1 (needs 'golden_answers' or "
            "'reward_model.ground_truth.target') nor MEM1 multi-objective (target as a list of answer lists)"
        )
    if path.suffix == ".json" or head.lstrip()[:1] == b"[":
        return "hotpotqa"
    raise DataFormatError(f"{path}: unknown data format; expected HotpotQA JSON, Search-R1 parquet or MEM1 parquet")


def _schema(path: Path) -> pa.Schema:
    try:
        return pq.read_schema(path)
    except (pa.ArrowException, OSError) as e:
        raise DataFormatError(f"{path}: not a readable parquet file ({e})") from None


def _columns(path: Path, wanted: Iterable[str], types: dict[str, tuple[Any, str]] | None = None) -> dict[str, list[Any]]:
    """The `wanted` columns the file has, as Python lists; `types` maps a column to
    (predicate on its Arrow type, what it should be), checked before any row is read."""
    schema = _schema(path)
    for column, (ok, expected) in (types or {}).items():
        if column in schema.names and not ok(schema.field(column).type):
            raise DataFormatError(f"{path}: column {column!r} has type {schema.field(column).type}, expected {expected}")
    try:
        table = pq.read_table(path, columns=[c for c in wanted if c in schema.names])
    except (pa.ArrowException, OSError) as e:
        raise DataFormatError(f"{path}: not a readable parquet file ({e})") from None
    return {c: table.column(c).to_pylist() for c in table.column_names}


def _is_string(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _is_messages(t: pa.DataType) -> bool:
    return _is_list(t) and _is_string(_struct_child(t.value_type, "content") or pa.null())


# Arrow types the readers rely on (a column absent is handled by each reader).
_COMMON_TYPES = {
    "data_source": (_is_string, "string"),
    "prompt": (_is_messages, "a list of {role, content} messages"),
    "reward_model": (pa.types.is_struct, "a struct with ground_truth.target"),
    "extra_info": (pa.types.is_struct, "a struct"),
}
_ITEM_TYPES = {
    **_COMMON_TYPES,
    "question": (_is_string, "string"),
    "golden_answers": (lambda t: _is_string(t) or (_is_list(t) and _is_string(t.value_type)), "a list of strings"),
    "hops": (pa.types.is_integer, "an integer"),
}


def _missing(path: Path, column: str, why: str) -> DataFormatError:
    return DataFormatError(f"{path}: missing column {column!r} ({why})")


def _user_content(prompt: Any, path: Path, row: int) -> str:
    if not prompt or not isinstance(prompt[0], dict) or not isinstance(prompt[0].get("content"), str):
        raise DataFormatError(f"{path}: row {row}: 'prompt' is not a list of {{role, content}} messages")
    return prompt[0]["content"]


def read_search_r1(path: str | Path) -> list[QAItem]:
    """Search-R1 / FlashRAG single-question parquet -> QAItems."""
    path = Path(path)
    wanted = ("id", "question", "golden_answers", "data_source", "prompt", "reward_model", "extra_info", "hops")
    cols = _columns(path, wanted, _ITEM_TYPES)
    if "question" not in cols and "prompt" not in cols:
        raise _missing(path, "question", "and no 'prompt' to take it from")
    if "golden_answers" not in cols and "reward_model" not in cols:
        raise _missing(path, "golden_answers", "and no 'reward_model.ground_truth.target' to take answers from")
    rows = len(next(iter(cols.values())))
    raw_ids = cols.get("id") or [f"{path.stem}-{i}" for i in range(rows)]
    sources = [s or "search_r1" for s in cols.get("data_source") or [None] * rows]
    hops_column = cols.get("hops") or [None] * rows
    if len(set(raw_ids)) < rows:  # merged files repeat ids across sources ("test_0" in nq and hotpotqa)
        raw_ids = [f"{s}-{i}-{r}" for r, (s, i) in enumerate(zip(sources, raw_ids))]
    items = []
    for r in range(rows):
        if "question" in cols:
            question = cols["question"][r]
        else:  # Search-R1 prompts end "... Question: <question>\n"
            question = _user_content(cols["prompt"][r], path, r).rsplit("Question:", 1)[-1].strip()
        if "golden_answers" in cols:
            answers = cols["golden_answers"][r]
        else:
            answers = ((cols["reward_model"][r] or {}).get("ground_truth") or {}).get("target")
        answers = [answers] if isinstance(answers, str) else list(answers or [])
        hops = MULTI_HOP_SOURCES.get(sources[r], 1) if hops_column[r] is None else hops_column[r]
        try:
            items.append(QAItem(id=str(raw_ids[r]), question=str(question), answers=tuple(map(str, answers)),
                                source=str(sources[r]), hops=int(hops)))  # fmt: skip
        except ValueError as e:
            raise DataFormatError(f"{path}: row {r}: {e}") from None
    return items


def split_questions(text: str, expected: int, where: str) -> list[str]:
    """The questions of a MEM1 prompt: the text after the last marker, split on '?; '."""
    if QUESTIONS_MARKER not in text:
        raise DataFormatError(f"{where}: prompt has no {QUESTIONS_MARKER!r}")
    tail = text.rsplit(QUESTIONS_MARKER, 1)[1].strip()
    questions = [q.strip() for q in re.split(r"(?<=\?);\s+", tail)]
    if len(questions) != expected or not all(questions):
        raise DataFormatError(
            f"{where}: found {len(questions)} questions after {QUESTIONS_MARKER!r} but "
            f"reward_model.ground_truth.target has {expected} answer lists (questions must end "
            f"in '?' and be joined by '; ')"
        )
    return questions


def read_mem1_tasks(path: str | Path) -> list[Task]:
    """MEM1 multi-objective parquet -> Tasks (one per row)."""
    path = Path(path)
    cols = _columns(path, ("data_source", "prompt", "reward_model", "extra_info"), _COMMON_TYPES)
    for column in ("prompt", "reward_model"):
        if column not in cols:
            why = "a MEM1 multi-objective file has the questions in 'prompt' and the answers in 'reward_model'"
            raise _missing(path, column, why)
    rows = len(cols["prompt"])
    extras, sources = cols.get("extra_info") or [None] * rows, cols.get("data_source") or [None] * rows
    tasks = []
    for r, (prompt, reward, extra, source) in enumerate(zip(cols["prompt"], cols["reward_model"], extras, sources)):
        where = f"{path}: row {r}"
        target = ((reward or {}).get("ground_truth") or {}).get("target")
        if not isinstance(target, list) or not all(isinstance(t, list) for t in target):
            raise DataFormatError(f"{where}: reward_model.ground_truth.target is not a list of answer lists")
        questions = split_questions(_user_content(prompt, path, r), len(target), where)
        extra, source = extra or {}, source or ""
        if extra.get("meta"):  # our own files: restore the task exactly
            try:
                meta = json.loads(extra["meta"])
            except json.JSONDecodeError as e:
                raise DataFormatError(f"{where}: extra_info.meta is not JSON ({e})") from None
        else:
            meta = {k: extra[k] for k in ("split", "indices") if extra.get(k) is not None} | {"row": r}
        task_id = extra.get("task_id") or f"{source or path.stem}-{extra.get('split') or 'row'}-{r}"
        try:
            tasks.append(Task(id=task_id, questions=tuple(questions), answers=tuple(tuple(map(str, t)) for t in target),
                              source=source, meta=meta))  # fmt: skip
        except ValueError as e:
            raise DataFormatError(f"{where}: {e}") from None
    return tasks


def write_tasks_parquet(tasks: Sequence[Task], path: str | Path, *, split: str = "",
                        instruction: str = DEFAULT_TASK_INSTRUCTION) -> Path:  # fmt: skip
    """Tasks -> a MEM1 multi-objective parquet. The prompt is `instruction` followed by
    "Answer the following questions: q1?; q2?; ...\\n", as the reference writes it, so
    questions read back with a '?' appended where they lacked one. A question containing
    "?; " cannot be read back and is refused here (DataFormatError naming the task)."""
    rows = []
    for i, t in enumerate(tasks):
        meta = dict(t.meta)
        indices = meta.get("indices")
        content = f"{instruction}{QUESTIONS_MARKER} {t.question_text}\n"
        split_questions(content, t.num_objectives, f"task {t.id!r}")  # never write what cannot be read back
        rows.append({
            "data_source": t.source,
            "prompt": [{"role": "user", "content": content}],
            "ability": "fact-reasoning",
            "reward_model": {"style": "rule", "ground_truth": {"target": [list(a) for a in t.answers]}},
            "extra_info": {
                "split": split, "index": i, "task_id": t.id, "meta": json.dumps(meta, sort_keys=True, default=str),
                "indices": indices if isinstance(indices, list) and all(isinstance(x, int) for x in indices) else [],
            },
        })  # fmt: skip
    return _write(pa.Table.from_pylist(rows, schema=TASKS_SCHEMA), path)


def write_items_parquet(items: Sequence[QAItem], path: str | Path, *, split: str = "",
                        instruction: str = DEFAULT_ITEM_INSTRUCTION) -> Path:  # fmt: skip
    """QAItems -> a Search-R1 single-question parquet (plus a `hops` column)."""
    rows = []
    for i, it in enumerate(items):
        question = it.question.strip() if it.question.strip().endswith("?") else it.question.strip() + "?"
        rows.append({
            "id": it.id, "question": question, "golden_answers": list(it.answers), "data_source": it.source,
            "prompt": [{"role": "user", "content": f"{instruction}Question: {question}\n"}],
            "ability": "fact-reasoning",
            "reward_model": {"style": "rule", "ground_truth": {"target": list(it.answers)}},
            "extra_info": {"split": split, "index": i}, "hops": it.hops,
        })  # fmt: skip
    return _write(pa.Table.from_pylist(rows, schema=ITEMS_SCHEMA), path)


def _write(table: pa.Table, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


# --- one entry point per kind of record -------------------------------------------------

_READERS = {"hotpotqa": read_hotpotqa, "search_r1": read_search_r1, "mem1": read_mem1_tasks}


def read_data_file(path: str | Path) -> tuple[str, tuple[QAItem, ...] | tuple[Task, ...]]:
    """(format, records): the Tasks of a MEM1 multi-objective file, the QAItems of any
    other. The one place that tells a task file from a file of single questions. A file is
    read once per version (path, size, mtime), as a config check and the job that follows
    both read it."""
    path = Path(path)
    detect_format(path)  # its errors (missing, unreadable, unknown) before the stat below
    stat = path.stat()
    return _read_cached(str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)


@functools.lru_cache(maxsize=8)
def _read_cached(path: str, size: int, mtime_ns: int, inode: int) -> tuple[str, tuple[QAItem, ...] | tuple[Task, ...]]:
    kind = detect_format(path)
    return kind, tuple(_READERS[kind](path))


def load_items(path: str | Path) -> list[QAItem]:
    """Single questions from HotpotQA JSON or a Search-R1 parquet (our world's files included)."""
    kind, records = read_data_file(path)
    if kind == "mem1":
        raise DataFormatError(f"{path}: a MEM1 multi-objective file holds tasks, not single questions; use load_tasks")
    return list(records)


def load_tasks(path: str | Path) -> list[Task]:
    """Tasks from any supported file; a single-question source gives 1-objective tasks."""
    kind, records = read_data_file(path)
    if kind == "mem1":
        return list(records)
    return [
        Task(id=it.id, questions=(it.question,), answers=(it.answers,), source=it.source,
             meta={"item_ids": [it.id], "hops": [it.hops]})
        for it in records
    ]  # fmt: skip
