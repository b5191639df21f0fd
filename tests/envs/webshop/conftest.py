"""Fixtures for the WebShop tests: small catalog files in WebShop's real JSON formats
(written here, field for field as WebShop's setup downloads them), and the generated catalog
with its search engine (built once per session)."""

import json

import pytest

from envs.webshop import WebShopEngine, generate_catalog

# items_shuffle*.json: scraped products, with fields WebShop drops (brand, product_information, ...)
RAW_PRODUCTS = [
    {
        "asin": "B000000001",
        "name": "Avello Women's Running Shoes - Lightweight, Non Slip",
        "full_description": "A running shoe with a breathable mesh upper.",
        "small_description": ["Lightweight mesh upper for hot days", "Non slip rubber sole"],
        "pricing": "$39.99",
        "customization_options": {
            "Color": [{"value": "Black/White", "image": "https://img.example/1.jpg"}, {"value": "Navy", "image": None}],
            "Size": [{"value": "9", "image": None}, {"value": "9.5", "image": None}],
        },
        "category": "fashion",
        "query": "Running Shoes ",
        "product_category": "Clothing, Shoes & Jewelry › Women › Shoes › Athletic › Running",
        "images": ["https://img.example/1.jpg"],
        "brand": "Avello",
        "product_information": {"Item Weight": "8 ounces"},
        "average_rating": 4.5,
    },
    {
        "asin": "B000000002",
        "name": "Brisko Moisturizing Shampoo - Sulfate Free, Tea Tree",
        "full_description": "Gentle daily shampoo.",
        "small_description": "One bullet as a plain string",
        "pricing": "$10.99 - $15.99",
        "customization_options": None,
        "category": "beauty",
        "query": "shampoo",
        "product_category": "Beauty & Personal Care › Hair Care › Shampoos",
        "images": [],
    },
    {"asin": "nan", "name": "a scraped row without an asin"},
    {"asin": "B000000001", "name": "a repeated asin"},
    {"asin": "B0000000003X", "name": "an asin longer than ten characters"},
    {"asin": "B000000004", "name": "Dallow Leather Running Belt for Phone and Keys", "pricing": "", "customization_options": {}},
    {"asin": "B000000005", "name": "Corvane Dining Table", "pricing": "$1,299.00", "customization_options": {"Size": None}},
]

# items_ins_v2*.json: product attributes, and the instruction behind WebShop's synthetic goals
RAW_ATTRIBUTES = {
    "B000000001": {
        "attributes": ["lightweight", "non slip"],
        "instruction": "i need lightweight running shoes",
        "instruction_attributes": ["lightweight", "non slip"],
    },
    "B000000002": {"attributes": ["sulfate free", "tea tree"]},
}

# items_human_ins.json: instructions people wrote, with their attributes and options
RAW_HUMAN_GOALS = {
    "B000000001": [
        {
            "asin": "B000000001",
            "instruction": "i want non slip running shoes in black.",
            "instruction_attributes": ["non slip"],
            "instruction_options": ["black | white", "9"],
        },
        {"asin": "B000000001", "instruction": "running shoes", "instruction_attributes": [], "instruction_options": []},
    ],
    "B000000005": [
        {"asin": "B000000005", "instruction": "a big dining table", "instruction_attributes": ["dining table"], "instruction_options": []},
    ],
}


@pytest.fixture
def webshop_files(tmp_path):
    paths = {
        "products": tmp_path / "items_shuffle_1000.json",
        "attributes": tmp_path / "items_ins_v2_1000.json",
        "human_goals": tmp_path / "items_human_ins.json",
    }
    paths["products"].write_text(json.dumps(RAW_PRODUCTS, ensure_ascii=False))
    paths["attributes"].write_text(json.dumps(RAW_ATTRIBUTES))
    paths["human_goals"].write_text(json.dumps(RAW_HUMAN_GOALS))
    return paths


@pytest.fixture(scope="session")
def generated_catalog():
    return generate_catalog(seed=0, num_products=400)


@pytest.fixture(scope="session")
def engine(generated_catalog):
    return WebShopEngine(generated_catalog)
