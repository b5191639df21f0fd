"""A generated WebShop catalog with goals: the offline default (no scraped data needed).

    catalog = generate_catalog(seed=0, num_products=400)          # a Catalog, ~50 ms
    files = generate_catalog_files(seed=0, num_products=400)
    files.write("data/webshop")   # items_shuffle.json, items_ins_v2.json, items_human_ins.json

The generator writes WebShop's own file formats (catalog.py), and the catalog is read back
through the same parser and goal builder as the real files, so generated and real goals
are scored by the same code. Eight kinds of product (running shoes, t-shirts, headphones,
pillow covers, coffee, shampoo, phone cases, dining chairs), each with WebShop-like
top-level category, scrape query and breadcrumb, title phrases, an attribute vocabulary
("non slip", "sulfate free"), option groups (color, size, scent, flavor name) and a price
range. A product is a brand, a kind, 3-5 of its kind's attributes (named in the title,
description and bullet points), 2-6 values per option group, and a price (some a range).

Each product gets one goal written like WebShop's human instructions: the product type,
1-3 of its attributes and one value of each of its option groups, e.g. "i need women's
running shoes that are non slip and lightweight, with color black and size 8"; the goal
builder adds the price bound. Goals are achievable by construction: the product exists,
carries every goal attribute and option value, and the instruction's words find it with
BM25 (tests check every goal is among the top 50 results of its own instruction).
Products of the same kind share type words and attributes, so several of them score well
and reading item pages pays off.

Determinism: one `random.Random(seed)` consumed in a fixed order.
"""

from __future__ import annotations

import json
import random
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .catalog import Catalog, build_human_goals, parse_products


@dataclass(frozen=True)
class Kind:
    """One kind of product and the vocabulary its products and goals draw on."""

    query: str  # WebShop's scrape query (the type the r_type query check compares)
    category: str  # WebShop's top-level category
    breadcrumb: str  # WebShop's product_category
    nouns: tuple[str, ...]  # title phrases naming the type
    audiences: tuple[str, ...]
    attributes: tuple[str, ...]
    options: tuple[tuple[str, tuple[str, ...]], ...]  # (group, values)
    price: tuple[float, float]
    blurb: str


KINDS = (
    Kind("running shoes", "fashion", "Clothing, Shoes & Jewelry › Shoes › Athletic › Running",
         ("Running Shoes", "Road Running Sneakers", "Trail Running Shoes"), ("men's", "women's"),
         ("lightweight", "breathable mesh", "non slip", "rubber sole", "arch support", "memory foam",
          "wide toe box", "shock absorbing", "lace up closure", "machine washable"),
         (("color", ("black", "white", "navy blue", "grey", "red", "pink", "black white", "olive green")),
          ("size", ("6", "6.5", "7", "7.5", "8", "8.5", "9", "9.5", "10", "11", "12"))),
         (25.0, 120.0), "Built for daily runs, gym sessions and long walks."),
    Kind("t-shirt", "fashion", "Clothing, Shoes & Jewelry › Clothing › Shirts › T-Shirts",
         ("Crew Neck T-Shirt", "V-Neck Tee Shirt", "Short Sleeve T-Shirt"), ("men's", "women's"),
         ("cotton", "short sleeve", "slim fit", "moisture wicking", "machine wash", "relaxed fit",
          "quick dry", "tagless", "pre shrunk"),
         (("color", ("black", "white", "heather grey", "navy", "burgundy", "olive", "royal blue")),
          ("size", ("small", "medium", "large", "x-large", "xx-large"))),
         (8.0, 35.0), "A wardrobe basic for work, sport and weekends."),
    Kind("wireless headphones", "electronics", "Electronics › Headphones, Earbuds & Accessories › Headphones",
         ("Wireless Headphones", "Bluetooth Over-Ear Headphones", "Noise Cancelling Headphones"), ("",),
         ("noise cancelling", "bluetooth 5.0", "long battery life", "built-in microphone", "foldable design",
          "hi-fi stereo", "fast charging", "memory foam ear cushions", "carrying case"),
         (("color", ("black", "white", "silver", "rose gold", "midnight blue")),),
         (20.0, 250.0), "Clear sound for music, calls and travel."),
    Kind("throw pillow covers", "home", "Home & Kitchen › Bedding › Decorative Pillows, Inserts & Covers › Throw Pillow Covers",
         ("Throw Pillow Covers", "Decorative Cushion Covers", "Pillow Cases"), ("",),
         ("double sided", "hidden zipper", "machine washable", "soft velvet", "linen blend", "set of 2",
          "living room", "super soft"),
         (("color", ("beige", "cream", "sage green", "navy blue", "mustard yellow", "grey", "blush pink")),
          ("size", ("16x16 inch", "18x18 inch", "20x20 inch", "22x22 inch", "12x20 inch"))),
         (9.0, 40.0), "Refresh a sofa, bed or reading nook in minutes."),
    Kind("coffee", "grocery", "Grocery & Gourmet Food › Beverages › Coffee, Tea & Cocoa › Coffee",
         ("Whole Bean Coffee", "Ground Coffee", "Coffee Beans"), ("",),
         ("organic", "fair trade", "low acid", "gluten free", "single origin", "non gmo", "kosher",
          "small batch roasted"),
         (("flavor name", ("medium roast", "dark roast", "light roast", "french roast", "espresso roast")),
          ("size", ("12 ounce (pack of 1)", "2 pound (pack of 1)", "12 ounce (pack of 2)", "5 pound (pack of 1)"))),
         (9.0, 60.0), "Roasted in small lots and sealed fresh."),
    Kind("shampoo", "beauty", "Beauty & Personal Care › Hair Care › Shampoo & Conditioner › Shampoos",
         ("Shampoo", "Moisturizing Shampoo", "Clarifying Shampoo"), ("",),
         ("sulfate free", "paraben free", "tea tree", "natural ingredients", "dry hair", "color treated",
          "argan oil", "cruelty free", "hair growth"),
         (("scent", ("tea tree mint", "coconut", "lavender", "unscented", "citrus")),
          ("size", ("8.5 fl oz", "16 fl oz", "33.8 fl oz", "16 fl oz (pack of 2)"))),
         (6.0, 45.0), "Cleans gently and leaves hair soft."),
    Kind("phone case", "electronics", "Cell Phones & Accessories › Cases, Holsters & Sleeves › Basic Cases",
         ("Phone Case", "Shockproof Phone Case", "Slim Phone Cover"), ("",),
         ("shockproof", "wireless charging compatible", "slim fit", "tpu bumper", "kickstand",
          "screen protector", "drop protection", "anti scratch"),
         (("color", ("clear", "black", "purple", "dark green", "pink")),
          ("size", ("iphone 13", "iphone 14", "iphone 14 pro", "iphone 15", "galaxy s23"))),
         (7.0, 30.0), "Protects the phone without adding bulk."),
    Kind("dining chairs", "furniture", "Home & Kitchen › Furniture › Kitchen & Dining Room Furniture › Chairs",
         ("Dining Chairs", "Kitchen Chairs", "Upholstered Dining Chairs"), ("",),
         ("solid wood legs", "easy assembly", "high back", "upholstered seat", "mid century modern",
          "faux leather", "armless", "easy clean"),
         (("color", ("grey", "beige", "black", "green", "walnut")),
          ("size", ("set of 2", "set of 4", "set of 6"))),
         (60.0, 400.0), "Comfortable seating for the kitchen or dining room."),
)  # fmt: skip

BRANDS = (
    "Avello", "Brisko", "Corvane", "Dallow", "Elvant", "Fenwick", "Gravo", "Hollin", "Istra", "Jorvik",
    "Kestral", "Lumio", "Marlo", "Norvel", "Ostra", "Pellam", "Quenby", "Rovella", "Sablo", "Tarrin",
)  # fmt: skip
BULLET_TAILS = ("for everyday use", "that lasts wash after wash", "for all-day comfort", "you can count on", "at a fair price")
RANGE_SHARE = 0.15  # share of products priced as a range ("$a - $b"), as some WebShop items are
INSTRUCTION_STARTS = ("i need", "i'm looking for", "i want to buy", "find me", "looking for")


@dataclass(frozen=True)
class CatalogFiles:
    """A catalog in WebShop's three file formats (as Python objects)."""

    products: list[dict[str, Any]]  # items_shuffle.json
    attributes: dict[str, Any]  # items_ins_v2.json
    human_goals: dict[str, Any]  # items_human_ins.json

    def write(self, folder: str | Path) -> dict[str, Path]:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = {
            "products": folder / "items_shuffle.json",
            "attributes": folder / "items_ins_v2.json",
            "human_goals": folder / "items_human_ins.json",
        }
        for key, path in paths.items():
            path.write_text(json.dumps(getattr(self, key), ensure_ascii=False))
        return paths


def generate_catalog_files(seed: int = 0, num_products: int = 400) -> CatalogFiles:
    if num_products < 1:
        raise ValueError(f"num_products={num_products}: must be at least 1")
    rng = random.Random(seed)
    products, attributes, human = [], {}, {}
    asins: set[str] = set()
    for i in range(num_products):
        kind = KINDS[i % len(KINDS)]
        asin = _asin(rng, asins)
        raw, audience, attrs = _product(rng, kind, asin)
        instruction, goal_attrs, goal_options = _instruction(rng, kind, audience, attrs, raw["customization_options"])
        products.append(raw)
        attributes[asin] = {"attributes": attrs, "instruction": instruction, "instruction_attributes": goal_attrs}
        human[asin] = [{"asin": asin, "instruction": instruction, "instruction_attributes": goal_attrs, "instruction_options": goal_options}]
    return CatalogFiles(products, attributes, human)


def generate_catalog(seed: int = 0, num_products: int = 400) -> Catalog:
    """The generated catalog with one human-style goal per product, shuffled by `seed`."""
    files = generate_catalog_files(seed, num_products)
    products = parse_products(files.products, files.attributes, source="generated catalog", seed=seed)
    return Catalog(products, build_human_goals(products, files.human_goals, seed=seed, source="generated goals"))


def _asin(rng: random.Random, taken: set[str]) -> str:
    while True:
        asin = "B0" + "".join(rng.choices(string.ascii_uppercase + string.digits, k=8))
        if asin not in taken:
            taken.add(asin)
            return asin


def _product(rng: random.Random, kind: Kind, asin: str) -> tuple[dict[str, Any], str, list[str]]:
    brand = rng.choice(BRANDS)
    audience = rng.choice(kind.audiences)
    noun = rng.choice(kind.nouns)
    attrs = rng.sample(kind.attributes, rng.randint(3, min(5, len(kind.attributes))))
    who = f"{audience.title()} " if audience else ""
    title = f"{brand} {who}{noun} - {_cap(attrs[0])}, {_cap(attrs[1])}"
    description = (
        f"The {brand} {noun.lower()} is {', '.join(attrs[:-1])} and {attrs[-1]}. {kind.blurb} "
        f"Made for {audience or 'everyone'} who want {kind.query} that simply work."
    )
    bullets = [f"{_cap(a)} {rng.choice(BULLET_TAILS)}" for a in attrs]
    options = {}
    for group, values in kind.options:
        k = rng.randint(2, min(6, len(values)))
        chosen = set(rng.sample(values, k))
        options[group] = [{"value": v, "image": None} for v in values if v in chosen]  # vocabulary order
    low, high = kind.price
    price = round(rng.uniform(low, high), 2)
    if rng.random() < RANGE_SHARE:
        pricing = f"${price:.2f} - ${round(price * rng.uniform(1.1, 1.5), 2):.2f}"
    else:
        pricing = f"${price:.2f}"
    raw = {
        "asin": asin,
        "name": title,
        "full_description": description,
        "small_description": bullets,
        "pricing": pricing,
        "customization_options": options,
        "category": kind.category,
        "query": kind.query,
        "product_category": kind.breadcrumb,
        "images": [],
    }
    return raw, audience, attrs


def _instruction(
    rng: random.Random, kind: Kind, audience: str, attrs: list[str], options: dict[str, list[dict]]
) -> tuple[str, list[str], list[str]]:
    wanted = rng.sample(attrs, rng.randint(1, min(3, len(attrs))))
    picks = [(group, rng.choice(values)["value"]) for group, values in options.items()]
    thing = f"{audience} {kind.query}".strip()
    verb = "are" if kind.query.endswith("s") else "is"
    qualities = wanted[0] if len(wanted) == 1 else f"{', '.join(wanted[:-1])} and {wanted[-1]}"
    text = f"{rng.choice(INSTRUCTION_STARTS)} {thing} that {verb} {qualities}"
    if picks:
        text += ", with " + " and ".join(f"{group} {value}" for group, value in picks)
    return text, wanted, [value for _, value in picks]


def _cap(phrase: str) -> str:
    return " ".join(w[:1].upper() + w[1:] for w in phrase.split())
