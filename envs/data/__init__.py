"""Data for the QA environments: a generated world (entities, passages, one- and two-hop
questions from a seed), readers and writers for the real formats (HotpotQA JSON, Search-R1
and MEM1 multi-objective parquet), and N-objective task sets built from either."""

from .build import DEFAULT_N_VALUES, BuiltData, build_data, build_task_set, select_tasks
from .loaders import (
    DataFileNotFoundError,
    DataFormatError,
    detect_format,
    hotpotqa_documents,
    load_items,
    load_tasks,
    read_data_file,
    read_hotpotqa,
    read_mem1_tasks,
    read_search_r1,
    write_items_parquet,
    write_tasks_parquet,
)
from .questions import Fact
from .world import SIZES, Entity, World, WorldFiles, WorldSize, generate_world, split_of

__all__ = [
    "DEFAULT_N_VALUES", "SIZES", "BuiltData", "DataFileNotFoundError", "DataFormatError", "Entity", "Fact",
    "World", "WorldFiles", "WorldSize", "build_data", "build_task_set", "detect_format", "generate_world",
    "hotpotqa_documents", "load_items", "load_tasks", "read_data_file", "read_hotpotqa", "read_mem1_tasks",
    "read_search_r1", "select_tasks", "split_of", "write_items_parquet", "write_tasks_parquet",
]  # fmt: skip
