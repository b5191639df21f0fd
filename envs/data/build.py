"""Task sets: N-objective tasks composed from the generated world or from loaded questions,
and the on-disk data folder `mem1 data build` writes.

    tasks = build_task_set(world, n_values=(1, 2, 16), tasks_per_n=100, seed=0, split="test")
    tasks = build_task_set("test.parquet", n_values=(3,), tasks_per_n=100)  # a MEM1 task file, as it is
    built = build_data("data/world", seed=0, size="default", n_values=(1, 2, 3, 4, 8, 16), tasks_per_n=100)

The folder `build_data` writes:
    corpus.jsonl                     the passages (Search-R1 corpus JSONL)
    questions_train.parquet          single questions of each split (Search-R1 parquet)
    questions_test.parquet
    tasks/<split>_n<N>.parquet       composed tasks, one file per split and N (MEM1
                                     multi-objective parquet, as the reference keeps one
                                     folder per number of objectives)
    manifest.json                    seed, size, counts, and the SHA-256 of every file
Every file is a pure function of (seed, size, n_values, tasks_per_n): building twice gives
byte-identical files (parquet bytes also carry the pyarrow version that wrote them).
Run it as `mem1 data build` (experiments/cli.py) or call `build_data` directly.

From the world, a task's questions are about pairwise distinct entities: no two share an
entity that must be looked up (a hop's subject), so an N-objective task needs N separate
lines of search, which is what makes N a measure of horizon. Composition goes through
envs.tasks.compose_tasks on pools of entity-disjoint questions (each pool a random maximal
such set; a new pool when one runs out). Loaded questions carry no entity links and are
composed by compose_tasks directly (distinct questions per task). A MEM1 multi-objective
file already holds composed tasks: they play as they are, each task's N is its own, and
n_values and tasks_per_n only select among them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from collections import Counter, defaultdict
from pathlib import Path
from typing import Callable, Mapping, Sequence

from ..tasks import QAItem, Task, compose_tasks
from .loaders import DataFormatError, read_data_file, write_tasks_parquet
from .world import SPLITS, World, generate_world

DEFAULT_N_VALUES = (1, 2, 3, 4, 8, 16)  # the paper evaluates at these N and trains at N = 2


def build_task_set(
    source: World | Sequence[QAItem] | str | Path,
    n_values: Sequence[int] = DEFAULT_N_VALUES,
    tasks_per_n: int = 100,
    seed: int = 0,
    split: str | None = "test",
    *,
    hops: Sequence[int] | None = None,
) -> dict[int, list[Task]]:
    """`tasks_per_n` tasks for each N in `n_values`, deterministically from `seed`.

    source: a World (its `split` items, entity-disjoint tasks), a sequence of QAItems, or
        a data file (envs.data.loaders.read_data_file). A file of single questions is
        composed like a sequence of them; a MEM1 multi-objective file's tasks are kept as
        they are (`select_tasks`). For items and files `split` only names composed tasks.
    hops: keep only questions with these hop counts (e.g. (2,) for multi-hop only).
    """
    if tasks_per_n < 1:
        raise ValueError(f"tasks_per_n must be >= 1, got {tasks_per_n}")
    for n in n_values:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n_values must be positive ints, got {n!r}")
    if isinstance(source, World):
        items, name = source.split_items(split), "world"
        entities_of: Callable[[str], tuple[str, ...]] | None = source.search_entities
    else:
        if isinstance(source, (str, Path)):
            kind, records = read_data_file(source)
            if kind == "mem1":
                if hops is not None:
                    raise ValueError(f"{source}: hops filters single questions; a MEM1 task file plays as it is")
                return select_tasks(records, n_values, tasks_per_n, seed=seed, where=str(source))
            items = list(records)
        else:
            items = list(source)
        name, entities_of = (items[0].source or "items") if items else "items", None
    if hops is not None:
        items = [it for it in items if it.hops in hops]
    if isinstance(source, (str, Path)) and n_values and len(items) < max(n_values):
        raise DataFormatError(f"{source}: n_values: N = {max(n_values)} needs as many distinct questions; the file has {len(items)}")
    out = {}
    for n in n_values:
        prefix = f"{name}-{split or 'all'}-"
        if entities_of is None:
            tasks = compose_tasks(items, n, tasks_per_n, seed=seed, prefix=prefix)
        else:
            tasks = _compose_entity_disjoint(items, entities_of, n, tasks_per_n, seed, where=f"{prefix}n{n}")
            tasks = [dataclasses.replace(t, id=f"{prefix}n{n}-{i}") for i, t in enumerate(tasks)]
        out[n] = [dataclasses.replace(t, meta={**t.meta, "split": split or "all"}) for t in tasks]
    return out


def select_tasks(tasks: Sequence[Task], n_values: Sequence[int], tasks_per_n: int, *, seed: int = 0,
                 where: str = "tasks") -> dict[int, list[Task]]:  # fmt: skip
    """N -> the given tasks with N objectives, for each N in `n_values`: all of them when
    there are at most `tasks_per_n`, else `tasks_per_n` drawn by `seed` (kept in their
    order). An N that no task has is a DataFormatError naming `where` and the Ns present."""
    by_n: dict[int, list[Task]] = defaultdict(list)
    for t in tasks:
        by_n[t.num_objectives].append(t)
    missing = [n for n in n_values if n not in by_n]
    if missing:
        present = ", ".join(map(str, sorted(by_n))) or "none (no tasks)"
        raise DataFormatError(
            f"{where}: n_values: no tasks with N = {', '.join(map(str, missing))} (asked for N = "
            f"{', '.join(map(str, n_values))}; the file has N = {present})"
        )
    out = {}
    for n in n_values:
        pool = by_n[n]
        keep = range(len(pool)) if len(pool) <= tasks_per_n else sorted(random.Random(f"{seed}:{n}").sample(range(len(pool)), tasks_per_n))
        out[n] = [pool[i] for i in keep]
    return out


def _compose_entity_disjoint(
    items: Sequence[QAItem], entities_of: Callable[[str], tuple[str, ...]], n: int, num_tasks: int, seed: int, where: str
) -> list[Task]:
    tasks: list[Task] = []
    for round_ in range(num_tasks):  # each round yields >= 1 task, so this bound is never the limit
        rng = random.Random(f"{seed}:{n}:{round_}")
        order = list(items)
        rng.shuffle(order)
        used: set[str] = set()  # membership only
        pool = []
        for it in order:
            entities = entities_of(it.id)
            if used.isdisjoint(entities):
                used.update(entities)
                pool.append(it)
        if len(pool) < n:
            raise ValueError(
                f"{where}: only {len(pool)} questions about distinct entities are available, fewer than N={n}; "
                "use a larger world size (or fewer objectives)"
            )
        take = min(len(pool) // n, num_tasks - len(tasks))
        tasks += compose_tasks(pool, n, take, seed=seed * 100_003 + round_)
        if len(tasks) >= num_tasks:
            break
    return tasks


@dataclasses.dataclass(frozen=True)
class BuiltData:
    directory: Path
    corpus: Path
    questions: Mapping[str, Path]  # split -> Search-R1 parquet
    tasks: Mapping[str, Mapping[int, Path]]  # split -> N -> MEM1 multi-objective parquet
    manifest: Path

    def paths(self) -> list[Path]:
        """Every written file, in a stable order."""
        task_files = [p for by_n in self.tasks.values() for p in by_n.values()]
        return [self.corpus, *self.questions.values(), *task_files, self.manifest]


def build_data(
    out_dir: str | Path,
    seed: int = 0,
    size: str | int = "default",
    n_values: Sequence[int] = DEFAULT_N_VALUES,
    tasks_per_n: int = 100,
    splits: Sequence[str] = SPLITS,
) -> BuiltData:
    """Generate the world for (seed, size) and write the data folder (module docstring)."""
    for split in splits:
        if split not in SPLITS:
            raise ValueError(f"splits must be drawn from {SPLITS}, got {split!r}")
    out_dir = Path(out_dir)
    world = generate_world(seed=seed, size=size)
    files = world.write(out_dir)
    tasks: dict[str, dict[int, Path]] = {}
    for split in splits:
        sets = build_task_set(world, n_values, tasks_per_n, seed=seed, split=split)
        tasks[split] = {
            n: write_tasks_parquet(ts, out_dir / "tasks" / f"{split}_n{n}.parquet", split=split) for n, ts in sets.items()
        }
    manifest = out_dir / "manifest.json"
    built = BuiltData(out_dir, files.corpus, files.questions, tasks, manifest)
    summary = {
        "seed": seed,
        "size": dataclasses.asdict(world.size),
        "entities": dict(sorted(Counter(e.kind for e in world.entities).items())),
        "passages": len(world.documents),
        "questions": {s: dict(sorted(Counter(f"hops{it.hops}" for it in world.split_items(s)).items())) for s in SPLITS},
        "n_values": list(n_values),
        "tasks_per_n": tasks_per_n,
        "files": {str(p.relative_to(out_dir)): _sha256(p) for p in built.paths()[:-1]},
    }
    manifest.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return built


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
