"""`mem1`: the command line of the platform.

    mem1 main [--sft C] [--train C] [--eval C] the README's main job: SFT warm start (cached), GRPO
                                               from it, then base vs SFT vs SFT+GRPO and memory policies
    mem1 eval CONFIG [-o key=value ...]        compare memory policies (MLflow, plots, table)
    mem1 sft CONFIG [-o ...]                   supervised fine-tuning on expert or teacher traces
    mem1 train CONFIG [--resume] [-o ...]      RL training on RLlib's new API stack
    mem1 tune CONFIG [--resume] [--address A]  a Ray Tune + Optuna sweep over the config's sweep.space
    mem1 compare [EXPERIMENT ...] [-o F.html]  one HTML report comparing the store's runs (logged to MLflow)
    mem1 serve retriever --corpus FILE.jsonl   the Search-R1 retrieval API on 127.0.0.1
    mem1 data build [--out DIR]                write the generated world and task sets
    mem1 model prepare [NAME]                  convert / cache a model (the default: SmolLM2)
    mem1 registry register|alias|list          the MLflow model registry (models:/NAME@ALIAS in configs)

Imports are lazy so `mem1 --help` answers at once.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings


def _eval(args: argparse.Namespace) -> int:
    from .config import EvalConfig, load_config
    from .evaluate import evaluate

    config = load_config(args.config, EvalConfig, args.override)
    evaluate(config)
    return 0


def _main_job(args: argparse.Namespace) -> int:
    from .main_job import load_configs, main_job

    main_job(*load_configs(args.sft, args.train, args.eval, args.sft_override, args.train_override, args.eval_override))
    return 0


def _sft(args: argparse.Namespace) -> int:
    from .config import TrainConfig, load_config
    from .sft import sft

    sft(load_config(args.config, TrainConfig, args.override))
    return 0


def _train(args: argparse.Namespace) -> int:
    from .config import load_config
    from .train import TrainConfig, train

    config = load_config(args.config, TrainConfig, args.override)
    train(config, resume=args.resume, allow_config_change=args.allow_config_change)
    return 0


def _tune(args: argparse.Namespace) -> int:
    from tune.sweep import sweep

    sweep(args.config, args.override, resume=args.resume, address=args.address)
    return 0


def _compare(args: argparse.Namespace) -> int:
    from . import compare, tracking

    uri = tracking.tracking_uri(args.tracking_uri, args.output_dir)
    try:
        done = compare.compare(uri, args.experiments or None, args.out or os.path.join(args.output_dir, "compare.html"))
    except compare.CompareError as e:
        print(str(e), file=sys.stderr)
        return 2
    c = done.comparison
    print(f"{len(c.rows)} rows, {len(c.curves)} training runs, {len(c.sweeps)} sweeps from {', '.join(c.experiments) or 'no experiments'}")
    print(f"report: {done.path.resolve().as_uri()}")
    if done.mlflow_run_id:
        print(f"MLflow: run {done.mlflow_run_id} (kind=compare) in {uri}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from envs.retrieval import server

    # the server's own argument parser (one place for its options and their errors)
    return server.main(args.rest)


def _data(args: argparse.Namespace) -> int:
    from envs.data import build_data

    size = int(args.size) if args.size.isdigit() else args.size
    built = build_data(args.out, seed=args.seed, size=size, n_values=args.n, tasks_per_n=args.tasks_per_n)
    for p in built.paths():
        print(p)
    return 0


def _model(args: argparse.Namespace) -> int:
    from policies.models import resolve_model

    print(resolve_model(args.name))
    return 0


def _registry(args: argparse.Namespace) -> int:
    from . import registry, tracking

    uri = tracking.tracking_uri(args.tracking_uri, args.output_dir)
    try:
        if args.action == "register":
            done = [registry.register(args.source, args.name, uri, alias=args.alias)]
        elif args.action == "alias":
            done = [registry.set_alias(args.name, args.version, args.alias, uri)]
        else:
            done = registry.list_versions(uri, args.name)
            if not done:
                print(f"no registered models in {uri}" + (f" named {args.name!r}" if args.name else ""))
    except registry.RegistryError as e:
        print(str(e), file=sys.stderr)
        return 2
    for v in done:
        aliases = " ".join(f"@{a}" for a in v.aliases)
        print(f"models:/{v.name}/{v.version}  {aliases:<16} run {v.run_id}  from {v.source}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mem1", description="Train and evaluate constant-memory LLM agents (MEM1).")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging, and the logs of vLLM and torch that are hidden otherwise")
    sub = parser.add_subparsers(dest="command", required=True)

    store = argparse.ArgumentParser(add_help=False)
    store.add_argument("--tracking-uri", default=None, help="the MLflow store (default: MLFLOW_TRACKING_URI, else <output-dir>/mlflow.db)")
    store.add_argument("--output-dir", default="runs", help="the runs folder whose mlflow.db is the default store (default: runs)")

    p = sub.add_parser("main", help="the main job: SFT warm start, GRPO from it, then evaluate base vs SFT vs SFT+GRPO and mem1 vs full context")
    configs = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
    p.add_argument("--sft", default=os.path.join(configs, "sft_qa.yaml"), metavar="CONFIG", help="default: experiments/configs/sft_qa.yaml")
    p.add_argument("--train", default=os.path.join(configs, "train_qa_grpo.yaml"), metavar="CONFIG", help="default: experiments/configs/train_qa_grpo.yaml")
    p.add_argument("--eval", default=os.path.join(configs, "eval_qa.yaml"), metavar="CONFIG", help="default: experiments/configs/eval_qa.yaml")
    p.add_argument("-s", "--sft-override", action="append", default=[], metavar="KEY=VALUE", help="override of the SFT config, e.g. -s sft.epochs=3")
    p.add_argument("-t", "--train-override", action="append", default=[], metavar="KEY=VALUE", help="override of the train config, e.g. -t training.iterations=10")
    p.add_argument("-e", "--eval-override", action="append", default=[], metavar="KEY=VALUE", help="override of the eval config, e.g. -e data.n_values=[1,2,4,8,16]")
    p.set_defaults(func=_main_job)

    p = sub.add_parser("eval", help="evaluate memory policies at several N; logs to MLflow")
    p.add_argument("config")
    p.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE", help="e.g. -o data.n_values=[1,2] -o sampler.backend=vllm")
    p.set_defaults(func=_eval)

    p = sub.add_parser("sft", help="supervised fine-tuning on demonstration traces (the scripted expert, or a JSONL of chat turns)")
    p.add_argument("config")
    p.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE", help="e.g. -o sft.epochs=3 -o sft.traces=teacher.jsonl")
    p.set_defaults(func=_sft)

    p = sub.add_parser("train", help="train a memory policy with RL (GRPO or PPO) on RLlib")
    p.add_argument("config")
    p.add_argument("--resume", action="store_true", help="continue the latest run of this config (same iteration count and MLflow run)")
    p.add_argument("--allow-config-change", action="store_true",
                   help="with --resume: continue although the config differs from the run's (training.iterations may always change)")
    p.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=_train)

    p = sub.add_parser("tune", help="sweep a training config with Ray Tune and Optuna (its sweep: section); one MLflow parent run, a child per trial")
    p.add_argument("config")
    p.add_argument("--resume", action="store_true", help="restore the newest sweep of this config: finished trials are kept, unfinished ones run again")
    p.add_argument("--address", default=None, help="an existing Ray cluster (auto, or the head's HOST:PORT); default: a local one")
    p.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE", help="e.g. -o sweep.num_samples=8")
    p.set_defaults(func=_tune)

    p = sub.add_parser("compare", parents=[store], help="one HTML report comparing the runs of the MLflow store (tables, plots), logged to MLflow")
    p.add_argument("experiments", nargs="*", metavar="EXPERIMENT", help="experiment names (default: all in the store)")
    p.add_argument("-o", "--out", default=None, help="the HTML file (default: <output-dir>/compare.html)")
    p.set_defaults(func=_compare)

    p = sub.add_parser("serve", help="run a service: retriever (mem1 serve retriever --corpus FILE.jsonl [--index bm25|dense|hybrid] [--host H] [--port P])")
    p.add_argument("service", choices=["retriever"])
    p.add_argument("rest", nargs=argparse.REMAINDER, help="the service's options (mem1 serve retriever --help)")
    p.set_defaults(func=_serve)

    p = sub.add_parser("data", help="data sets: build")
    p.add_argument("action", choices=["build"])
    p.add_argument("--out", default="runs/data", help="output directory")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", default="default", help="world size: small, default, or a number of entities")
    p.add_argument("--n", type=int, nargs="+", default=[1, 2, 4, 8, 16], help="objectives per task")
    p.add_argument("--tasks-per-n", type=int, default=64)
    p.set_defaults(func=_data)

    p = sub.add_parser("model", help="models: prepare (convert and cache)")
    p.add_argument("action", choices=["prepare"])
    p.add_argument("name", nargs="?", default="smollm2-135m-instruct")
    p.set_defaults(func=_model)

    p = sub.add_parser("registry", help="the MLflow model registry: register a run's policy, alias a version, list versions")
    actions = p.add_subparsers(dest="action", required=True)
    q = actions.add_parser("register", parents=[store], help="register a run folder's (or a model folder's) policy as a new version")
    q.add_argument("source", help="runs/<name>-<time> of mem1 train or mem1 sft, or a Hugging Face model folder")
    q.add_argument("--name", required=True, help="the registered model's name")
    q.add_argument("--alias", default=None, help="also point this alias (e.g. champion) at the new version")
    q = actions.add_parser("alias", parents=[store], help="point an alias at a version: mem1 registry alias NAME VERSION champion")
    q.add_argument("name")
    q.add_argument("version", type=int)
    q.add_argument("alias")
    q = actions.add_parser("list", parents=[store], help="registered versions and their aliases")
    q.add_argument("name", nargs="?", default=None)
    p.set_defaults(func=_registry)
    return parser


def _quiet_libraries() -> None:
    """Keep the console for the job's own progress. On CPU a vLLM engine start logs ~35 lines
    (platform probes, LD_PRELOAD hints, the same thread warning six times), torch's C++ side a
    NUMA note, and a deprecation warning fires from vLLM's kernel scan; `-v` shows them all.
    Set before the libraries are imported (each reads its variable then); explicit settings win."""
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    logging.getLogger("vllm").setLevel(os.environ["VLLM_LOGGING_LEVEL"].upper())  # its import-time Triton probes log before vLLM reads that
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # "generated new fontManager"
    # RLlib 2.60 builds a deprecated RLModuleConfig inside every RLModule.__init__ (its own
    # call, rl_module.py:463), and Tune's monitor asks for gputil on CPU machines.
    logging.getLogger("ray._common.deprecation").setLevel(logging.ERROR)
    logging.getLogger("ray.tune.utils.util").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=r".*torch\.distributed\.reduce_op.* is deprecated", category=FutureWarning)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not args.verbose:
        _quiet_libraries()
    from envs.data import DataFormatError

    from .config import ConfigError
    from .faults import RunStopped

    try:
        return args.func(args)
    except (ConfigError, DataFormatError) as e:  # a bad config or data file: its message, no traceback
        print(str(e), file=sys.stderr)
        return 2
    except RunStopped as e:  # a fault rule stopped the run (a checkpoint was written first)
        print(f"run stopped: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
