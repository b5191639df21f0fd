"""Catalog and goal loaders on files in WebShop's real formats, and the generated catalog:
deterministic, written in the same formats, and every goal achievable."""

import json

import pytest

from envs.webshop import generate_catalog, generate_catalog_files, load_catalog, score_purchase
from envs.webshop.catalog import NO_PRICE_BOUND, Catalog


def test_products_parse_as_webshop_does(webshop_files):
    catalog = load_catalog(webshop_files["products"], webshop_files["attributes"])
    # "nan", the repeated asin and the 12-character asin are skipped, as in WebShop's load_products
    assert [p.asin for p in catalog.products] == ["B000000001", "B000000002", "B000000004", "B000000005"]
    shoes = catalog.product("B000000001")
    assert shoes.title == "Avello Women's Running Shoes - Lightweight, Non Slip"
    assert shoes.query == "running shoes"  # lower-cased and stripped
    assert shoes.category == "fashion"
    assert shoes.bullet_points == ("Lightweight mesh upper for hot days", "Non slip rubber sole")
    assert shoes.options == {"color": ("black | white", "navy"), "size": ("9", "9.5")}  # "/" shown as " | "
    assert shoes.attributes == ("lightweight", "non slip")
    assert shoes.pricing == (39.99,) and shoes.price == 39.99 and shoes.price_tag == "$39.99"

    shampoo = catalog.product("B000000002")
    assert shampoo.bullet_points == ("One bullet as a plain string",)
    assert shampoo.options == {}
    assert shampoo.pricing == (10.99, 15.99) and shampoo.price_tag == "$10.99 to $15.99"
    assert 10.99 <= shampoo.price <= 15.99  # a draw from the range
    assert catalog.product("B000000004").pricing == (100.0,)  # no pricing: WebShop's $100
    assert catalog.product("B000000004").attributes == ()  # not annotated
    assert catalog.product("B000000005").pricing == (1299.0,)  # "$1,299.00"
    assert catalog.product("B000000005").options == {}  # a group without values is dropped

    again = load_catalog(webshop_files["products"], webshop_files["attributes"])
    assert again.product("B000000002").price == shampoo.price  # seeded: same in every process
    assert load_catalog(webshop_files["products"], webshop_files["attributes"], seed=1).product("B000000002").price != shampoo.price


def test_synthetic_goals_one_per_option_combination(webshop_files):
    catalog = load_catalog(webshop_files["products"], webshop_files["attributes"])
    # Only B000000001 has an annotated instruction; 2 colours x 2 sizes = 4 goals
    assert sorted(g.id for g in catalog.goals) == [f"B000000001-{i}" for i in range(4)]
    by_options = {g.goal_options: g for g in catalog.goals}
    assert set(by_options) == {("black | white", "9"), ("black | white", "9.5"), ("navy", "9"), ("navy", "9.5")}
    goal = by_options[("navy", "9.5")]
    # price $39.99: the first four $10 steps above are 40, 50, 60, 70; the bound is the larger of two draws
    assert goal.price_upper in (50.0, 60.0, 70.0)
    assert goal.instruction == f"i need lightweight running shoes with color: navy, and size: 9.5, and price lower than {goal.price_upper:.2f} dollars"
    assert goal.attributes == ("lightweight", "non slip")
    assert goal.name == "Avello Women's Running Shoes - Lightweight, Non Slip"
    assert goal.query == "running shoes" and goal.category == "fashion"
    # each attribute appears in all 4 goals: weight = mean(1/4, 1/4)
    assert all(g.weight == pytest.approx(0.25) for g in catalog.goals)


def test_human_goals(webshop_files):
    catalog = load_catalog(webshop_files["products"], webshop_files["attributes"], webshop_files["human_goals"])
    goals = {g.id: g for g in catalog.goals}
    assert sorted(goals) == ["B000000001-0", "B000000005-0"]  # the goal without attributes is skipped
    shoes = goals["B000000001-0"]
    assert shoes.instruction.startswith("i want non slip running shoes in black, and price lower than ")  # "." stripped
    assert shoes.attributes == ("non slip",) and shoes.goal_options == ("black | white", "9")
    table = goals["B000000005-0"]
    # $1,299 is above every $10 step WebShop draws from: no bound, no price text
    assert table.price_upper == NO_PRICE_BOUND and table.instruction == "a big dining table"


def test_num_products_takes_the_first(webshop_files):
    catalog = load_catalog(webshop_files["products"], webshop_files["attributes"], num_products=2)
    assert [p.asin for p in catalog.products] == ["B000000001", "B000000002"]


def test_bad_files_name_the_file_and_field(tmp_path, webshop_files):
    with pytest.raises(FileNotFoundError, match="missing.json"):
        load_catalog(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json: not valid JSON"):
        load_catalog(bad)
    bad.write_text(json.dumps({"asin": "B1"}))
    with pytest.raises(ValueError, match="bad.json: expected a JSON list of products"):
        load_catalog(bad)
    bad.write_text(json.dumps([{"asin": "B1", "name": "ok"}, {"asin": "B2"}]))
    with pytest.raises(ValueError, match="product 1: missing field 'name'"):
        load_catalog(bad)
    bad.write_text(json.dumps([{"asin": "B1", "name": "ok", "pricing": "about ten dollars"}]))
    with pytest.raises(ValueError, match="product 0: pricing='about ten dollars' holds no '\\$' price"):
        load_catalog(bad)
    bad.write_text(json.dumps(["B1"]))
    with pytest.raises(ValueError, match="attributes file"):
        load_catalog(webshop_files["products"], bad)
    with pytest.raises(ValueError, match="split='dev'"):
        load_catalog(webshop_files["products"], webshop_files["attributes"]).split("dev")


def test_split_holds_out_the_first_goals(generated_catalog):
    test, train = generated_catalog.split("test"), generated_catalog.split("train")
    assert len(test) == 200 and len(train) == 200  # min(500, half of 400)
    assert set(test).isdisjoint(train) and test + train == generated_catalog.split("all")


def test_generated_catalog_is_deterministic(generated_catalog):
    again = generate_catalog(seed=0, num_products=400)
    assert again.products == generated_catalog.products and again.goals == generated_catalog.goals
    other = generate_catalog(seed=1, num_products=400)
    assert other.goals[0] != generated_catalog.goals[0]
    assert len({p.asin for p in generated_catalog.products}) == 400
    assert len({p.query for p in generated_catalog.products}) == 8  # eight kinds of product


def test_generated_files_load_back_through_the_webshop_loaders(tmp_path, generated_catalog):
    paths = generate_catalog_files(seed=0, num_products=400).write(tmp_path)
    loaded = load_catalog(paths["products"], paths["attributes"], paths["human_goals"], seed=0)
    assert loaded.products == generated_catalog.products and loaded.goals == generated_catalog.goals
    synthetic = load_catalog(paths["products"], paths["attributes"], seed=0)  # WebShop's synthetic goals
    assert len(synthetic.goals) > len(loaded.goals)


def test_every_generated_goal_is_achievable(generated_catalog, engine):
    on_first_page = 0
    for i, goal in enumerate(generated_catalog.goals):
        product = generated_catalog.product(goal.asin)
        assert set(goal.attributes) <= set(product.attributes)
        values = {v for vs in product.options.values() for v in vs}
        assert set(goal.goal_options) <= values and len(goal.goal_options) == len(product.options)
        assert product.price <= goal.price_upper
        found = [p.asin for p in engine.search(goal.instruction)]
        assert goal.asin in found, f"{goal.id}: the instruction does not find its product"
        on_first_page += goal.asin in found[:10]
        if i % 10 == 0:  # the score tags titles with spaCy (ms each): a tenth of the goals is enough
            chosen = {g: next(v for v in goal.goal_options if v in vs) for g, vs in product.options.items()}
            assert score_purchase(product, goal, product.price, chosen).reward == 1.0
    assert on_first_page / len(generated_catalog.goals) > 0.7


def test_catalog_rejects_goals_about_unknown_products(generated_catalog):
    with pytest.raises(ValueError, match="not in the catalog"):
        Catalog(generated_catalog.products[:1], generated_catalog.goals[1:2])
