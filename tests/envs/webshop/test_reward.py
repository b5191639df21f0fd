"""WebShop's purchase score on hand-checked goal/product pairs, with the numbers worked out
per web_agent_site/engine/goal.py:

    reward = r_type * (attribute_matches + option_matches + [price <= bound]) / (#attributes + #options + 1)

The goal below has 3 attributes and 2 options, so the denominator is 3 + 2 + 1 = 6. Title
nouns come from the spaCy tagger (en-core-web-sm); the comments list what it tags.
"""

import pytest

from envs.webshop import Goal, Product, score_purchase
from envs.webshop.reward import attribute_matches, fuzzy_ratio, normalize_color, option_matches, type_reward

SHOES_CATEGORY = "Clothing, Shoes & Jewelry › Women › Shoes › Athletic › Running"
# nouns: avello, women, running, shoes, lightweight, non, slip (7)
SHOES_TITLE = "Avello Women's Running Shoes - Lightweight, Non Slip"

SHOES = Product(
    asin="B0SHOES001",
    title=SHOES_TITLE,
    category="fashion",
    query="running shoes",
    product_category=SHOES_CATEGORY,
    description="A breathable running shoe.",
    bullet_points=("Cushioned insole",),
    attributes=("lightweight", "non slip", "arch support", "rubber sole"),
    options={"color": ("black", "white"), "size": ("8", "9")},
    pricing=(39.99,),
    price=39.99,
)
GOAL = Goal(
    id="B0SHOES001-0",
    asin="B0SHOES001",
    instruction="i need lightweight non slip running shoes with arch support, black, size 9, under 50 dollars",
    attributes=("non slip", "lightweight", "arch support"),
    goal_options=("black", "9"),
    price_upper=50.0,
    name=SHOES_TITLE,
    query="running shoes",
    category="fashion",
    product_category=SHOES_CATEGORY,
)


def test_exact_match_scores_one():
    s = score_purchase(SHOES, GOAL, 39.99, {"color": "black", "size": "9"})
    # (3 attributes + 2 options + 1 price) / 6 * r_type 1 = 1.0
    assert s.reward == 1.0
    assert (s.r_type, s.r_att, s.r_option, s.r_price, s.title_score) == (1.0, 1.0, 1.0, True, 1.0)
    assert s.query_match and s.category_match


def test_wrong_option_lowers_it():
    s = score_purchase(SHOES, GOAL, 39.99, {"color": "white", "size": "9"})
    # "black" matches neither "white" nor "9": (3 + 1 + 1) / 6 = 0.8333
    assert s.option_matches == 1 and s.r_option == 0.5
    assert s.reward == pytest.approx(5 / 6)
    missing = score_purchase(SHOES, GOAL, 39.99, {"size": "9"})  # colour never chosen: the same
    assert missing.reward == pytest.approx(5 / 6)
    none = score_purchase(SHOES, GOAL, 39.99, {})  # (3 + 0 + 1) / 6
    assert none.reward == pytest.approx(4 / 6)


def test_over_price_lowers_it():
    s = score_purchase(SHOES, GOAL, 59.99, {"color": "black", "size": "9"})
    # 59.99 > 50: (3 + 2 + 0) / 6 = 0.8333
    assert s.r_price is False and s.reward == pytest.approx(5 / 6)
    assert score_purchase(SHOES, GOAL, 50.0, {"color": "black", "size": "9"}).reward == 1.0  # the bound itself is within


def test_same_type_other_product_loses_attributes():
    trail = Product(
        asin="B0SHOES002",
        # nouns: brisko, men, trail, running, shoes, rubber, sole, wide, toe, box
        title="Brisko Men's Trail Running Shoes - Rubber Sole, Wide Toe Box",
        query="running shoes",
        product_category=SHOES_CATEGORY,
        attributes=("rubber sole", "wide toe box", "arch support"),
        options={"color": ("black",), "size": ("9",)},
    )
    s = score_purchase(trail, GOAL, 45.0, {"color": "black", "size": "9"})
    # same query: r_type 1 (title score 2/7: running, shoes). Attributes: only "arch support"
    # (no "non slip" or "lightweight" in its attributes, title, bullets or description):
    # (1 + 2 + 1) / 6 = 0.6667
    assert s.r_type == 1.0 and s.title_score == pytest.approx(2 / 7)
    assert s.attribute_matches == 1 and s.reward == pytest.approx(4 / 6)


def test_wrong_type_lowers_it_by_half_or_to_zero():
    belt = Product(
        asin="B0BELT0001",
        # nouns: dallow, leather, running, belt, phone, keys -> shares only "running" with the goal title
        title="Dallow Leather Running Belt for Phone and Keys",
        query="running belt",
        product_category="Sports & Outdoors › Running › Accessories",  # shares only "Running": no category match
        description="A lightweight running belt.",
        bullet_points=("Adjustable strap", "Water resistant pocket"),
        attributes=("water resistant", "adjustable"),
        options={"color": ("black",)},
    )
    s = score_purchase(belt, GOAL, 15.0, {"color": "black"})
    # title score 1/7 = 0.143: above 0.1 but not above 0.2, and no query or category match,
    # so r_type = 0.5. "lightweight" is in the description (1 attribute), "black" matches
    # (1 option), the price is within: 0.5 * (1 + 1 + 1) / 6 = 0.25
    assert s.title_score == pytest.approx(1 / 7) and not s.query_match and not s.category_match
    assert s.r_type == 0.5 and s.attribute_matches == 1 and s.option_matches == 1
    assert s.reward == pytest.approx(0.25)

    shampoo = Product(asin="B0SHAMPOO1", title="Brisko Moisturizing Shampoo - Sulfate Free, Tea Tree", query="shampoo",
                      product_category="Beauty & Personal Care › Hair Care › Shampoos", attributes=("sulfate free",))
    s = score_purchase(shampoo, GOAL, 12.0, {})
    # no shared title noun: title score 0 -> r_type 0 -> reward 0, whatever else matches
    assert s.title_score == 0.0 and s.r_type == 0.0 and s.reward == 0.0


def test_type_score_below_a_tenth():
    long_goal = Goal(id="g", asin="x", instruction="", attributes=("gym",), goal_options=(), price_upper=100.0,
                     # 14 noun tokens, "sneakers" and "shoes" twice (WebShop divides by all of them)
                     name="Women Running Shoes Mesh Sneakers Gym Trainers Walking Sneakers Athletic Footwear Lightweight Comfort Casual Shoes")
    bag = Product(asin="y", title="Kestral Canvas Gym Bag")  # nouns: kestral, canvas, gym, bag
    r_type, title_score, _, _ = type_reward(bag, long_goal)
    # 1 shared noun / 14 = 0.071 < 0.1 -> r_type 0.1; the total is 0.1 * (1 + 0 + 1) / 2 = 0.1
    assert title_score == pytest.approx(1 / 14) and r_type == 0.1
    assert score_purchase(bag, long_goal, 20.0, {}).reward == pytest.approx(0.1)


@pytest.mark.parametrize(
    "bought, match",
    [("b › c › a", True), ("a › d › b", True), ("a › a › b", True), ("a › a › d", False), ("d › e › f", False)],
)
def test_category_match_needs_two_shared_levels(bought, match):
    goal = Goal(id="g", asin="x", instruction="", attributes=(), goal_options=(), price_upper=1.0,
                name="Shoes", query="q1", product_category="a › b › c")
    product = Product(asin="x", title="Shoes", query="q2", product_category=bought)
    assert type_reward(product, goal)[3] is match


def test_attribute_matching_fuzzy_then_verbatim_text():
    product = Product(asin="x", title="Tea Tree Shampoo", description="Made with natural ingredients.",
                      bullet_points=("Smells of lemons",), attributes=("essential oil",))
    # "essential oils" ~ "essential oil" (token set ratio 96 > 85); "tea tree" is in the title;
    # "natural ingredients" in the description; "argan oil" nowhere (ratio with "essential oil" < 85)
    assert fuzzy_ratio("essential oil", "essential oils") == 96
    assert attribute_matches(product, ["essential oils", "tea tree", "natural ingredients", "argan oil"]) == 3


def test_option_matching_normalises_colours_and_tokens():
    # WebShop's own cases (engine/normalize.py's test): the first colour in list order wins
    for text, colour in [("", ""), ("black forest", "black"), ("violet lavender", "lavender"),
                         ("steelivy fuchsia", "fuchsia"), ("123alabaster", "alabaster"), ("webshop", "webshop")]:
        assert normalize_color(text) == colour
    assert normalize_color("navy blue") == "blue" and normalize_color("9.5") == "9.5"
    assert option_matches(["blue", "x-large"], ["navy blue", "x-large"]) == 2  # "navy blue" reduces to "blue"
    assert option_matches(["navy"], ["navy blue"]) == 0  # ... so plain "navy" misses it, as in WebShop
    assert option_matches(["powder snow", "xl"], ["cool powder snow"]) == 1  # token subset: ratio 100
    assert option_matches(["pack of 12", "grey"], ["grey", "xl", "pack of 12"]) == 2
    assert option_matches([], ["grey"]) == 0
    assert fuzzy_ratio("Black/White", "black white") == 100  # thefuzz's processing: case and punctuation
