"""The MLflow model registry: register a trained policy, give a version an alias, list what
is there, and use `models:/NAME@ALIAS` or `models:/NAME/VERSION` wherever a config names a
model (`model.name`, `training.init_from`, `compare_models`).

    mem1 registry register runs/train_qa_grpo-<time> --name qa-mem1   # a run folder or a model folder
    mem1 registry alias qa-mem1 3 champion
    mem1 registry list
    mem1 eval experiments/configs/eval_qa.yaml -o model.name=models:/qa-mem1@champion

A version is an MLflow transformers model (weights and tokenizer), logged into the source
run's own MLflow run when the folder is a `mem1 train` / `mem1 sft` run (its run.json names
it), so the registry links back to the run's params and metrics; a bare model folder gets a
run of its own in the `mem1-registry` experiment. Each version copies the weights into the
store (about 0.5 GB for SmolLM2-135M in float32), so register the winners, not every run.

A `models:/` reference is resolved once, on the driver, into a local Hugging Face folder
under `$MEM1_HOME/registry/` (written atomically, reused while the version is unchanged);
everything downstream (vLLM, the learner, Ray workers on other nodes through the config)
sees a plain folder. The registry is the tracking store's: `tracking.tracking_uri`, else
`MLFLOW_TRACKING_URI`, else `<output_dir>/mlflow.db` (experiments/tracking.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import tracking
from .config import ConfigError

PREFIX = "models:/"
_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))$")
REGISTRY_EXPERIMENT = "mem1-registry"


class RegistryError(ConfigError):
    """A registry reference or source that cannot be used; the message says which and why
    (a ConfigError, so the command line prints it without a traceback)."""


@dataclass(frozen=True)
class Version:
    name: str
    version: int
    aliases: tuple[str, ...]
    run_id: str | None
    source: str  # the folder it was registered from (a tag)


def is_registry_uri(name: str | None) -> bool:
    return bool(name) and name.startswith(PREFIX)


def _client(tracking_uri: str):
    import mlflow

    tracking.quiet()
    mlflow.set_tracking_uri(tracking_uri)
    return mlflow.MlflowClient(tracking_uri=tracking_uri)


def _version(mv: Any, aliases: tuple[str, ...] = ()) -> Version:
    return Version(mv.name, int(mv.version), tuple(aliases or getattr(mv, "aliases", None) or ()), mv.run_id,
                   (mv.tags or {}).get("mem1.source", ""))


# -- register -------------------------------------------------------------------------------


def _store_dir(tracking_uri: str) -> Path:
    """Where a SQLite store keeps its artifacts (`mlartifacts/` beside the database file)."""
    if tracking_uri.startswith("sqlite:///"):
        return Path(tracking_uri[len("sqlite:///"):]).parent
    return Path.cwd()


def _model_folder(source: Path) -> tuple[Path, str | None]:
    """(the Hugging Face folder, the MLflow run id of the run that made it, if any)."""
    if not source.exists():
        raise RegistryError(f"{source}: no such folder (give a run folder runs/<name>-<time> or a model folder)")
    run_json = source / "run.json"
    if run_json.exists():  # a `mem1 train` / `mem1 sft` run folder
        model = source / "model"
        if not (model / "config.json").exists():
            raise RegistryError(f"{source}: this run has no exported policy ({model}/config.json is missing); "
                                "it ended before export or ran with training.export_model=false")
        return model, json.loads(run_json.read_text()).get("mlflow_run_id")
    if (source / "config.json").exists():
        parent = source.parent / "run.json"  # runs/<run>/model: still the run's own MLflow run
        return source, json.loads(parent.read_text()).get("mlflow_run_id") if source.name == "model" and parent.exists() else None
    raise RegistryError(f"{source}: neither a run folder (run.json) nor a Hugging Face model folder (config.json)")


def register(source: str | Path, name: str, tracking_uri: str, *, alias: str | None = None) -> Version:
    """Log the policy in `source` (a run folder or a model folder) as an MLflow transformers
    model and register it as a new version of `name`; with `alias`, point it there."""
    import mlflow

    folder, run_id = _model_folder(Path(source))
    client = _client(tracking_uri)
    if run_id is not None:
        try:
            client.get_run(run_id)
        except mlflow.exceptions.MlflowException:
            run_id = None  # the run lives in another store: start a fresh one in this one
    if run_id is None:
        experiment_id = tracking.setup(tracking_uri, _store_dir(tracking_uri), REGISTRY_EXPERIMENT)
        run_id = client.create_run(experiment_id, run_name=f"register-{name}", tags={"kind": "register"}).info.run_id
        client.set_terminated(run_id)
    with mlflow.start_run(run_id=run_id):
        model_uri = log_policy(folder)
    return register_logged(model_uri, name, source, tracking_uri, alias=alias)


def log_policy(folder: str | Path) -> str:
    """Log a Hugging Face folder as an MLflow transformers model ("policy") in the active run;
    returns its model URI."""
    import mlflow

    from policies.models import load_model, load_tokenizer

    os.environ.setdefault("MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK", "true")
    # mlflow 3.17 with transformers 5 fails on a path; the loaded objects work.
    components = {"model": load_model(str(folder)), "tokenizer": load_tokenizer(str(folder))}
    info = mlflow.transformers.log_model(components, name="policy", task="text-generation",
                                         pip_requirements=["torch", "transformers"])  # the defaults add torchvision, which breaks
    return info.model_uri


def register_logged(model_uri: str, name: str, source: str | Path, tracking_uri: str, *, alias: str | None = None) -> Version:
    """Register a logged model as a new version of `name` (tagged with the folder it came from)."""
    import mlflow

    client = _client(tracking_uri)
    mv = mlflow.register_model(model_uri, name, tags={"mem1.source": str(Path(source).resolve())})
    if alias:
        set_alias(name, int(mv.version), alias, tracking_uri)
    return _version(client.get_model_version(name, mv.version))


def set_alias(name: str, version: int, alias: str, tracking_uri: str) -> Version:
    import mlflow

    if re.fullmatch(r"[vV]\d+", alias):
        raise RegistryError(f"alias {alias!r}: 'v<number>' is reserved by MLflow for versions; use a word like champion")
    client = _client(tracking_uri)
    try:
        client.set_registered_model_alias(name, alias, str(version))
        return _version(client.get_model_version(name, str(version)))
    except mlflow.exceptions.MlflowException as e:
        raise RegistryError(f"{name} version {version}: {e.message}") from None


def list_versions(tracking_uri: str, name: str | None = None) -> list[Version]:
    client = _client(tracking_uri)
    found = client.search_model_versions(f"name = '{name}'" if name else None)
    # a search does not fill in the versions' aliases; the registered model holds them
    aliases: dict[tuple[str, str], list[str]] = {}
    for model in {mv.name for mv in found}:
        for alias, version in (client.get_registered_model(model).aliases or {}).items():
            aliases.setdefault((model, str(version)), []).append(alias)
    return sorted((_version(mv, tuple(sorted(aliases.get((mv.name, str(mv.version)), [])))) for mv in found),
                  key=lambda v: (v.name, v.version))


# -- resolve --------------------------------------------------------------------------------


def _lookup(uri: str, tracking_uri: str):
    import mlflow

    match = _URI.match(uri)
    if match is None:
        raise RegistryError(f"{uri!r}: a registry reference is models:/NAME@ALIAS or models:/NAME/VERSION")
    client = _client(tracking_uri)
    try:
        if match["alias"]:
            return client.get_model_version_by_alias(match["name"], match["alias"])
        return client.get_model_version(match["name"], match["version"])
    except mlflow.exceptions.MlflowException as e:
        known = sorted({f"{v.name}/{v.version}" + "".join(f" @{a}" for a in v.aliases) for v in list_versions(tracking_uri)})
        raise RegistryError(f"{uri}: not in the registry at {tracking_uri} ({e.message}); registered: {known or 'none'}") from None


def resolve(uri: str, tracking_uri: str) -> str:
    """A `models:/` reference as a local Hugging Face folder (weights and tokenizer)."""
    import mlflow

    from policies.models import cache_dir

    mv = _lookup(uri, tracking_uri)
    key = hashlib.sha256(f"{tracking_uri}|{mv.name}|{mv.version}|{mv.creation_timestamp}".encode()).hexdigest()[:12]
    target = cache_dir() / "registry" / f"{mv.name}-v{mv.version}-{key}"
    if (target / "config.json").exists():
        return str(target)
    components = mlflow.transformers.load_model(f"models:/{mv.name}/{mv.version}", return_type="components")
    tmp = target.with_name(target.name + f".partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    components["model"].save_pretrained(tmp)
    components["tokenizer"].save_pretrained(tmp)
    if (target / "config.json").exists():  # another process got there first
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
    return str(target)


def resolve_config(config: Any) -> Any:
    """`config` (an EvalConfig or TrainConfig) with every `models:/` reference replaced by its
    local folder; the same object when there is none."""
    uri = tracking.tracking_uri(config.tracking.tracking_uri, config.output_dir)
    update: dict[str, Any] = {}
    if is_registry_uri(config.model.name):
        update["model"] = config.model.model_copy(update={"name": resolve(config.model.name, uri)})
    training = getattr(config, "training", None)
    if training is not None and is_registry_uri(training.init_from):
        update["training"] = training.model_copy(update={"init_from": resolve(training.init_from, uri)})
    compare = getattr(config, "compare_models", None)
    if compare and any(is_registry_uri(m if isinstance(m, str) else m.name) for m in compare.values()):
        update["compare_models"] = {
            label: (resolve(m, uri) if is_registry_uri(m) else m) if isinstance(m, str)
            else (m.model_copy(update={"name": resolve(m.name, uri)}) if is_registry_uri(m.name) else m)
            for label, m in compare.items()}
    return config.model_copy(update=update) if update else config
