"""Domains: how a config becomes tasks and environments, one module per kind of env.

A domain is a context manager that owns the services its envs need (a retriever server, a
search engine) for the job's lifetime, and hands out tasks grouped by objective count N
and a fresh env per episode:

    with make_domain(config) as domain:
        tasks = domain.tasks("test")            # {N: [task, ...]}
        env = domain.make_env(n)                # a TextEnv for one episode

Evaluation and the RLlib EnvRunner use domains the same way, so a new env needs no special
case anywhere else: add a module here and its config section in experiments/config.py.
"""

from __future__ import annotations

from importlib import import_module

from .base import Domain

DOMAINS = {"qa": ".qa:QADomain", "webshop": ".webshop:WebShopDomain", "webqa": ".webqa:WebQADomain", "toy": ".toy:ToyDomain"}


def make_domain(config, **kwargs) -> Domain:
    """The domain named by `config.env.kind`, built from the whole config."""
    kind = config.env.kind
    if kind not in DOMAINS:
        raise ValueError(f"env.kind={kind!r}: allowed {sorted(DOMAINS)}")
    module, cls = DOMAINS[kind].split(":")
    return getattr(import_module(module, __name__), cls)(config, **kwargs)


__all__ = ["DOMAINS", "Domain", "make_domain"]
