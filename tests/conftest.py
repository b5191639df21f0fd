"""Shared fixtures: the real tokenizer of the default model, and a tiny random-init model
built on it (saved as a Hugging Face folder, so both sampler backends can load it)."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tokenizer():
    from policies.models import DEFAULT_MODEL, load_tokenizer

    return load_tokenizer(DEFAULT_MODEL)  # converts the bundled GGUF once per machine (~1 min)


@pytest.fixture(scope="session")
def tiny_model_dir(tokenizer, tmp_path_factory):
    from policies.models import build_tiny_model

    path = tmp_path_factory.mktemp("tiny-model")
    build_tiny_model(tokenizer, seed=0, save_to=path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    from policies.models import load_model

    return load_model(tiny_model_dir)
