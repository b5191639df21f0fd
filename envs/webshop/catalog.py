"""WebShop's product catalog and goals, read from WebShop's own JSON files.

    catalog = load_catalog("items_shuffle_1000.json", "items_ins_v2_1000.json")          # synthetic goals
    catalog = load_catalog("items_shuffle_1000.json", "items_ins_v2_1000.json",
                           human_goals="items_human_ins.json")                            # human goals
    catalog.product("B09QKP7XQL").title, catalog.goals[0].instruction

The three files (WebShop's `setup.sh` downloads them) and what is read from each:
- products (`items_shuffle*.json`): a JSON list of scraped products with `asin`, `name`,
  `full_description`, `small_description` (bullet points, a list or one string), `pricing`
  (a string such as "$12.99" or "$10.99 - $15.99"; empty means $100), `customization_options`
  ({group: [{"value": ..., "image": ...}]} or null), `category`, `query`, `product_category`
  ("A › B › C"). Option groups are lower-cased and their values lower-cased with "/" shown as
  " | ", as WebShop's `load_products` does; products whose asin is "nan" or longer than ten
  characters, and repeated asins, are skipped as there.
- attributes (`items_ins_v2*.json`): {asin: {"attributes": [...], "instruction": ...,
  "instruction_attributes": [...]}}; the attributes are the product's, the instruction and
  its attributes make WebShop's synthetic goals (one goal per combination of option values,
  "<instruction> with color: x, and size: y").
- human goals (`items_human_ins.json`): {asin: [{"instruction", "instruction_attributes",
  "instruction_options"}, ...]}; goals without attributes are skipped, as in WebShop.

Prices and price bounds follow WebShop: a product priced as a range costs a uniform draw
from it; a goal's bound is the upper of two draws among the first four multiples of $10
above the product's price, appended to the instruction as ", and price lower than X.00
dollars" (no bound when fewer than two exist). Departures: the draws are seeded per asin
and goal (WebShop uses the unseeded global `random`), so a catalog is the same in every
process; goals are shuffled with `seed` (WebShop: `random.seed(233)`); synthetic goal
options are kept as their values (WebShop keeps {group: value} and its option score
compares the purchased values against "group value" strings, which matches the same pairs);
products without annotated attributes get none (WebShop: ['DUMMY_ATTR'], which matches
nothing either).
"""

from __future__ import annotations

import itertools
import json
import random
import re
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

DEFAULT_PRICE = 100.0  # WebShop's price for a product without pricing
NO_PRICE_BOUND = 1_000_000.0  # WebShop's bound when no $10 step above the price is drawn
PRICE_STEPS = tuple(10.0 * i for i in range(1, 100))  # WebShop's PRICE_RANGE
MAX_ASIN_CHARS = 10
TEST_GOALS = 500  # MEM1's reference holds out the first 500 shuffled goals as its test set


@dataclass(frozen=True)
class Product:
    """One product as the site shows and the reward reads it (WebShop's parsed fields)."""

    asin: str
    title: str  # WebShop's `name` / `Title`
    category: str = ""  # top-level category, e.g. "beauty"
    query: str = ""  # the search query the product was scraped under (lower-cased)
    product_category: str = ""  # breadcrumb "A › B › C"
    description: str = ""
    bullet_points: tuple[str, ...] = ()
    attributes: tuple[str, ...] = ()
    options: Mapping[str, tuple[str, ...]] = field(default_factory=dict, hash=False)  # group -> values
    pricing: tuple[float, ...] = (DEFAULT_PRICE,)  # one price or a (low, high) range
    price: float = DEFAULT_PRICE  # what a purchase costs (a draw from the range)
    rating: str = "N.A."

    @property
    def price_tag(self) -> str:
        """The price as the site shows it ("$12.99" or "$10.0 to $20.0")."""
        if len(self.pricing) == 1:
            return f"${self.pricing[0]}"
        return f"${self.pricing[0]} to ${self.pricing[1]}"


@dataclass(frozen=True)
class Goal:
    """One shopping task in WebShop's goal format; `id` names the episode's task."""

    id: str  # f"{asin}-{i}": the i-th goal built on that product
    asin: str  # the product the instruction was written for
    instruction: str  # what the agent is told, price bound included
    attributes: tuple[str, ...]  # target attributes
    goal_options: tuple[str, ...]  # target option values
    price_upper: float  # the price bound (NO_PRICE_BOUND when none)
    name: str  # the goal product's title (for the type score)
    query: str = ""
    category: str = ""
    product_category: str = ""
    weight: float = 1.0  # WebShop's sampling weight (synthetic goals favour rare attributes)


class Catalog:
    """Products by asin and the goals over them (shuffled, deterministic)."""

    def __init__(self, products: Sequence[Product], goals: Sequence[Goal]):
        if not products:
            raise ValueError("a WebShop catalog needs at least one product")
        self.products = tuple(products)
        self.by_asin = {p.asin: p for p in self.products}
        self.goals = tuple(goals)
        for g in self.goals:
            if g.asin not in self.by_asin:
                raise ValueError(f"goal {g.id!r} is about product {g.asin!r}, which is not in the catalog")

    def product(self, asin: str) -> Product:
        return self.by_asin[asin]

    def split(self, split: str | None) -> tuple[Goal, ...]:
        """'test': the first min(500, half) goals (MEM1's held-out set); 'train': the rest;
        'all' or None: every goal."""
        n_test = min(TEST_GOALS, len(self.goals) // 2) if len(self.goals) > 1 else len(self.goals)
        if split in (None, "all"):
            return self.goals
        if split == "test":
            return self.goals[:n_test]
        if split == "train":
            return self.goals[n_test:]
        raise ValueError(f"split={split!r}: allowed 'train', 'test' or 'all'")


# ---------------------------------------------------------------------------- files


def read_json(path: str | Path, what: str) -> Any:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"WebShop {what} file {path} does not exist")
    try:
        with path.open(encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e}); expected WebShop's {what} file") from None


def load_catalog(
    products: str | Path,
    attributes: str | Path | None = None,
    human_goals: str | Path | None = None,
    *,
    num_products: int | None = None,
    seed: int = 0,
) -> Catalog:
    """A catalog from WebShop's files. Goals are human goals when `human_goals` is given,
    else synthetic goals from `attributes`; with neither, the catalog has no goals."""
    raw = read_json(products, "products (items_shuffle*.json)")
    attrs = read_json(attributes, "attributes (items_ins_v2*.json)") if attributes is not None else {}
    if not isinstance(attrs, dict):
        raise ValueError(f"{attributes}: a WebShop attributes file (items_ins_v2*.json) is a JSON object {{asin: {{'attributes': [...]}}}}, got a {type(attrs).__name__}")
    items = parse_products(raw, attrs, source=str(products), num_products=num_products, seed=seed)
    if human_goals is not None:
        human = read_json(human_goals, "human instructions (items_human_ins.json)")
        goals = build_human_goals(items, human, seed=seed, source=str(human_goals))
    else:
        goals = build_synthetic_goals(items, attrs, seed=seed)
    return Catalog(items, goals)


# ---------------------------------------------------------------------------- products


def parse_products(
    raw: Any,
    attributes: Mapping[str, Any] | None = None,
    *,
    source: str = "products",
    num_products: int | None = None,
    seed: int = 0,
) -> list[Product]:
    """WebShop's raw product list -> `Product`s (the parsing of WebShop's `load_products`)."""
    if not isinstance(raw, list):
        raise ValueError(f"{source}: expected a JSON list of products, got {type(raw).__name__}")
    attributes = attributes or {}
    if num_products is not None:
        raw = raw[:num_products]  # the file is shuffled already, as WebShop assumes
    seen: set[str] = set()
    products = []
    for i, p in enumerate(raw):
        where = f"{source}: product {i}"
        if not isinstance(p, dict):
            raise ValueError(f"{where}: expected an object, got {type(p).__name__}")
        asin = _text(p, "asin", where, required=True)
        if asin == "nan" or len(asin) > MAX_ASIN_CHARS or asin in seen:
            continue
        seen.add(asin)
        bullets = p.get("small_description") or []
        bullets = [str(b) for b in bullets] if isinstance(bullets, list) else [str(bullets)]
        pricing = parse_pricing(p.get("pricing"), where)
        annotated = attributes.get(asin) or {}
        products.append(
            Product(
                asin=asin,
                title=_text(p, "name", where, required=True),
                category=_text(p, "category", where),
                query=_text(p, "query", where).lower().strip(),
                product_category=_text(p, "product_category", where),
                description=_text(p, "full_description", where),
                bullet_points=tuple(bullets),
                attributes=tuple(str(a) for a in annotated.get("attributes") or ()),
                options=parse_options(p.get("customization_options"), where),
                pricing=pricing,
                price=_draw_price(pricing, seed, asin),
            )
        )
    return products


def parse_pricing(value: Any, where: str = "product") -> tuple[float, ...]:
    """WebShop's price string -> one price or a (low, high) range: every "$"-prefixed number
    counts ("$1,299.00", "$10.99 - $15.99"); none at all means $100."""
    if value is None or value == "" or value == []:
        return (DEFAULT_PRICE,)
    if isinstance(value, (int, float)):
        return (float(value),)
    text = "".join(str(v) for v in value) if isinstance(value, list) else str(value)
    prices = []
    for part in text.split("$")[1:]:
        digits = re.sub(r"[^\d.]", "", part)
        try:
            prices.append(float(Decimal(digits)))
        except InvalidOperation:
            raise ValueError(f"{where}: cannot read a price from pricing={value!r}") from None
    if not prices:
        raise ValueError(f"{where}: pricing={value!r} holds no '$' price")
    return tuple(prices[:2])


def parse_options(value: Any, where: str = "product") -> dict[str, tuple[str, ...]]:
    """`customization_options` -> {group: values}, normalised as WebShop shows them."""
    if not value:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{where}: customization_options must be an object {{group: [{{'value': ...}}]}}, got {type(value).__name__}")
    options: dict[str, tuple[str, ...]] = {}
    for group, contents in value.items():
        if contents is None:
            continue
        values = []
        for c in contents:
            v = c.get("value") if isinstance(c, dict) else c
            if v is None:
                raise ValueError(f"{where}: option {group!r} has an entry without 'value'")
            values.append(str(v).strip().replace("/", " | ").lower())
        options[str(group).lower()] = tuple(values)
    return options


def _text(p: Mapping[str, Any], key: str, where: str, required: bool = False) -> str:
    value = p.get(key)
    if value is None:
        if required:
            raise ValueError(f"{where}: missing field {key!r} (WebShop products need 'asin' and 'name')")
        return ""
    return str(value)


def _draw_price(pricing: tuple[float, ...], seed: int, asin: str) -> float:
    if len(pricing) == 1:
        return pricing[0]
    return random.Random(f"price:{seed}:{asin}").uniform(pricing[0], pricing[1])


# ---------------------------------------------------------------------------- goals


def price_bound(price: float, rng: random.Random) -> tuple[float, str]:
    """(bound, instruction suffix) as WebShop draws them for a product of this price."""
    steps = [p for p in PRICE_STEPS if p > price][:4]
    if len(steps) < 2:
        return NO_PRICE_BOUND, ""
    upper = sorted(rng.sample(steps, 2))[1]
    return upper, f", and price lower than {upper:.2f} dollars"


def _goal(product: Product, i: int, instruction: str, attributes: Iterable[str], options: Iterable[str], seed: int) -> Goal:
    upper, suffix = price_bound(product.price, random.Random(f"goal:{seed}:{product.asin}:{i}"))
    return Goal(
        id=f"{product.asin}-{i}",
        asin=product.asin,
        instruction=instruction + suffix,
        attributes=tuple(attributes),
        goal_options=tuple(options),
        price_upper=upper,
        name=product.title,
        query=product.query,
        category=product.category,
        product_category=product.product_category,
    )


def build_human_goals(products: Sequence[Product], human: Any, *, seed: int = 0, source: str = "human goals") -> list[Goal]:
    """Goals from instructions people wrote ({asin: [instruction, ...]})."""
    if not isinstance(human, dict):
        raise ValueError(f"{source}: a WebShop human goals file (items_human_ins.json) is a JSON object {{asin: [{{'instruction': ...}}]}}, got a {type(human).__name__}")
    goals = []
    for product in products:
        for i, ins in enumerate(human.get(product.asin) or ()):
            where = f"{source}: {product.asin}[{i}]"
            if not isinstance(ins, dict) or "instruction" not in ins:
                raise ValueError(f"{where}: expected an object with 'instruction', 'instruction_attributes', 'instruction_options'")
            attributes = ins.get("instruction_attributes") or []
            if not attributes:
                continue  # WebShop skips goals without attributes
            text = str(ins["instruction"]).strip(".")
            goals.append(_goal(product, i, text, attributes, ins.get("instruction_options") or [], seed))
    random.Random(seed).shuffle(goals)
    return goals


def build_synthetic_goals(products: Sequence[Product], attributes: Mapping[str, Any], *, seed: int = 0) -> list[Goal]:
    """WebShop's synthetic goals: the annotated instruction, once per combination of option
    values, weighted towards rare attributes."""
    goals = []
    for product in products:
        annotated = attributes.get(product.asin) or {}
        text, goal_attributes = annotated.get("instruction"), annotated.get("instruction_attributes") or []
        if not text or not goal_attributes:
            continue
        groups = sorted(product.options)
        for i, combination in enumerate(itertools.product(*(product.options[g] for g in groups))):
            option_text = ", and ".join(f"{g}: {v}" for g, v in zip(groups, combination))
            instruction = f"{text} with {option_text}" if option_text else text
            goals.append(_goal(product, i, instruction, goal_attributes, combination, seed))
    counts: dict[str, int] = {}
    for g in goals:
        for a in g.attributes:
            counts[a] = counts.get(a, 0) + 1
    goals = [replace(g, weight=sum(1.0 / counts[a] for a in g.attributes) / len(g.attributes)) for g in goals]
    random.Random(seed).shuffle(goals)
    return goals
