"""WebShop (envs/webshop): a catalog, its search engine built once, one goal per episode.

The catalog is WebShop's own files when `env.catalog` is set (goals from `env.human_goals`,
else WebShop's synthetic goals from `env.attributes`), else the generated catalog of
`env.catalog_seed` and `env.num_products`. Every WebShop task has one objective, so tasks
come as {1: goals}: the first `env.num_goals` goals of the split, in the catalog's
deterministic order.
"""

from __future__ import annotations

from functools import cached_property

from envs.webshop import Catalog, Goal, WebShopEngine, WebShopEnv, generate_catalog, load_catalog

from .base import Domain

DEFAULT_GENERATED_PRODUCTS = 400


class WebShopDomain(Domain):
    def __init__(self, config, engine: WebShopEngine | None = None):
        super().__init__(config)
        self.engine = engine

    def _open(self) -> None:
        if self.engine is None:
            self.engine = WebShopEngine(self.catalog, search_return_n=self.config.env.search_results)

    @cached_property
    def catalog(self) -> Catalog:
        env = self.config.env
        if self.engine is not None:
            return self.engine.catalog
        if env.catalog is None:
            return generate_catalog(env.catalog_seed, env.num_products or DEFAULT_GENERATED_PRODUCTS)
        if env.attributes is None and env.human_goals is None:
            raise ValueError(f"env.catalog={env.catalog} needs goals: set env.attributes (items_ins_v2*.json) or env.human_goals (items_human_ins.json)")
        return load_catalog(env.catalog, env.attributes, env.human_goals, num_products=env.num_products, seed=env.catalog_seed)

    def tasks(self, split: str | None = None) -> dict[int, list[Goal]]:
        goals = list(self.catalog.split(split)[: self.config.env.num_goals])
        if not goals:
            raise ValueError(f"the WebShop catalog has no goals in split {split!r}; check env.attributes / env.human_goals")
        return {1: goals}

    def expert(self):
        """The scripted shopper (envs/webshop/expert.py): search, open the goal's product, choose its options, buy."""
        from envs.webshop.expert import WebShopExpert

        return WebShopExpert(self.catalog)

    def make_env(self, n: int) -> WebShopEnv:
        if self.engine is None:
            raise RuntimeError("open the domain (with make_domain(config) as domain) before making envs")
        return WebShopEnv(self.engine, self.config.env.webshop_config())
