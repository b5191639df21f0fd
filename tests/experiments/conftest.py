"""Fixtures of the rollout tests: the tiny random-init model behind the transformers
sampler, the SmolLM2 chat template and a BM25 index over the small generated world."""

import pytest

from envs.data import generate_world
from envs.retrieval import build_or_load_index
from policies.chat import ChatFormat
from policies.samplers import TransformersSampler


@pytest.fixture(scope="module")
def sampler(tiny_model_dir, tokenizer):
    return TransformersSampler(tiny_model_dir, tokenizer)


@pytest.fixture(scope="module")
def chat(tokenizer):
    return ChatFormat(tokenizer)


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    files = generate_world(0, "small").write(tmp_path_factory.mktemp("world"))
    return build_or_load_index(files.corpus, "bm25")
