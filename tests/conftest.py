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


@pytest.fixture(scope="session")
def char_model_dir(tmp_path_factory):
    """A tiny random-init model over a ~100-token character vocabulary (offline, instant):
    small enough that RL visibly learns in a few iterations on CPU."""
    from policies.models import build_char_tokenizer, build_tiny_model

    path = tmp_path_factory.mktemp("char-model")
    build_tiny_model(build_char_tokenizer(), seed=0, save_to=path)
    return str(path)


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster for the module's tests (3 CPUs: a driver and two env runners)."""
    import ray

    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False, configure_logging=False, namespace="mem1-tests")
    yield
    ray.shutdown()
