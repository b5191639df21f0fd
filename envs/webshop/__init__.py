"""WebShop (Yao et al., 2022) without Java or a web server: a product catalog in WebShop's own
file format (or a generated one), a BM25 search engine over it, the site's pages as text,
WebShop's purchase score, and the MEM1-style text environment.

    catalog = generate_catalog(seed=0, num_products=400)        # or load_catalog(real files)
    engine = WebShopEngine(catalog)                               # build once, share
    env = WebShopEnv(engine, WebShopConfig(max_turns=15))
    prompt, info = env.reset(options={"task": catalog.goals[0]})
    obs, reward, terminated, truncated, info = env.step("<think>...</think><answer>search[red shoes]</answer>")

Modules: catalog.py (formats, loaders, goals), generate.py (the offline catalog),
engine.py (search), site.py (pages and navigation), reward.py (the score), env.py (the env).
"""

from .catalog import Catalog, Goal, Product, build_human_goals, build_synthetic_goals, load_catalog, parse_products
from .engine import SEARCH_RETURN_N, WebShopEngine
from .env import WEBSHOP_DEMONSTRATION, WEBSHOP_PROMPT, WebShopConfig, WebShopEnv
from .generate import CatalogFiles, generate_catalog, generate_catalog_files
from .reward import ShopScore, score_purchase
from .site import Browser, InvalidAction, Page, Purchase

__all__ = [
    "Browser", "Catalog", "CatalogFiles", "Goal", "InvalidAction", "Page", "Product", "Purchase",
    "SEARCH_RETURN_N", "ShopScore", "WEBSHOP_DEMONSTRATION", "WEBSHOP_PROMPT", "WebShopConfig",
    "WebShopEngine", "WebShopEnv", "build_human_goals", "build_synthetic_goals", "generate_catalog",
    "generate_catalog_files", "load_catalog", "parse_products", "score_purchase",
]  # fmt: skip
