"""The WebShop site as text: pages, what can be clicked on each, and where each click leads.

    browser = Browser(engine, goal.instruction)
    browser.page.text, browser.page.actions      # the search page; ["search[<keywords>]"]
    browser.search("red running shoes")          # -> results page 1
    browser.click("next >"); browser.click("b0abc12345"); browser.click("black")
    browser.click("buy now")                     # -> Purchase(product, options, price)

Pages and click targets are WebShop's (web_agent_site/engine/engine.py, app.py, the
templates): the search page (search box only); results pages (Back to Search, < Prev from
page 2 on, Next >, one link per product asin); the item page (Back to Search, < Prev to
the results, one radio value per option, the Description / Features / Reviews tabs, and
Attributes when `show_attributes`, Buy Now); a tab page (Back to Search, < Prev to the
item). Text follows WebShop's "text" observation mode: the visible strings of the page
joined by " [SEP] ", the instruction on every page; click targets are the lower-cased
button texts, asins and option values, as WebShop's text env keys them.

Departures: Next > shows only while more results exist (WebShop always shows it and then
renders empty pages); the item page says which options are selected (WebShop's plain text
mode shows radio buttons without their state); a search is only possible where the search
box is (WebShop's text env accepts `search[...]` on any page); opening a product clears
the options chosen on another one; the Reviews tab shows "No reviews yet." (WebShop never
loads reviews, so the tab is always empty there).
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Mapping

from .catalog import Product
from .engine import WebShopEngine

SEP = " [SEP] "
BACK_TO_SEARCH = "back to search"
PREV_PAGE = "< prev"
NEXT_PAGE = "next >"
BUY_NOW = "buy now"
TABS = ("description", "features", "reviews", "attributes")
SEARCH_ACTION = "search[<keywords>]"
QUOTES = "'\"`"


@dataclass(frozen=True)
class Page:
    name: str  # "search", "results", "item", a tab name, or "done"
    text: str
    clickables: tuple[str, ...] = ()  # lower-cased click targets, in page order
    has_search_bar: bool = False

    @property
    def actions(self) -> list[str]:
        """The actions this page offers, as the agent writes them."""
        return ([SEARCH_ACTION] if self.has_search_bar else []) + [f"click[{c}]" for c in self.clickables]


@dataclass(frozen=True)
class Purchase:
    product: Product
    options: Mapping[str, str] = field(default_factory=dict)
    price: float = 0.0


class InvalidAction(Exception):
    """An action the current page does not offer; the message says why, for the agent."""


def normalize_target(target: str) -> str:
    """A click target as a key: lower-case, single spaces, HTML entities such as &gt;
    decoded (as the MEM1 reference does). Page elements and what the agent wrote inside
    click[...] go through the same function, so they compare equal."""
    return " ".join(html.unescape(target).split()).lower()


class Browser:
    """One shopping session's place on the site."""

    def __init__(self, engine: WebShopEngine, instruction: str, *, results_per_page: int = 10, show_attributes: bool = False):
        if results_per_page < 1:
            raise ValueError(f"results_per_page={results_per_page}: must be at least 1")
        self.engine = engine
        self.instruction = instruction
        self.results_per_page = results_per_page
        self.show_attributes = show_attributes
        self.keywords = ""
        self.results: list[Product] = []
        self.page_no = 1
        self.product: Product | None = None
        self.options: dict[str, str] = {}
        self._option_keys: dict[str, tuple[str, str]] = {}  # click key -> (group, value) on the item page
        self.page = self._search_page()

    # ------------------------------------------------------------------ actions

    def search(self, query: str) -> Page:
        if not self.page.has_search_bar:
            raise InvalidAction(f"there is no search box on the {self.page.name} page; click[{BACK_TO_SEARCH}] first")
        query = " ".join(query.split())
        if not query:
            raise InvalidAction("the search has no keywords; write search[some keywords]")
        self.keywords = query.lower()
        self.results = self.engine.search(self.keywords)
        return self._show_results(1)

    def click(self, target: str) -> Page | Purchase:
        key = normalize_target(target)
        if key not in self.page.clickables:
            key = key.strip(QUOTES)  # click['black'], unless the quotes belong to the element (a 24" size)
        if key not in self.page.clickables:
            if self.page.has_search_bar:
                raise InvalidAction("there is nothing to click on the search page; write search[some keywords]")
            raise InvalidAction(f"'{key}' is not a clickable element of the {self.page.name} page")
        if key == BACK_TO_SEARCH:
            self.keywords, self.results, self.product, self.options = "", [], None, {}
            self.page = self._search_page()
            return self.page
        if self.page.name == "results":
            if key == NEXT_PAGE:
                return self._show_results(self.page_no + 1)
            if key == PREV_PAGE:
                return self._show_results(self.page_no - 1)
            self.product = next(p for p in self._results_on_page() if p.asin.lower() == key)
            self.options = {}
            return self._show_item()
        assert self.product is not None  # item and tab pages always have a product
        if self.page.name == "item":
            if key == PREV_PAGE:
                return self._show_results(self.page_no)
            if key == BUY_NOW:
                self.page = Page("done", "Thank you for shopping with us!")
                return Purchase(self.product, dict(self.options), self.product.price)
            if key in TABS:
                return self._show_tab(key)
            group, value = self._option_keys[key]
            self.options[group] = value
            return self._show_item()
        return self._show_item()  # a tab page offers only < Prev (and Back to Search)

    # ------------------------------------------------------------------ pages

    def _instruction(self) -> str:
        return f"Instruction:{SEP}{self.instruction}"

    def _search_page(self) -> Page:
        return Page("search", f"WebShop{SEP}{self._instruction()}{SEP}Search", (), has_search_bar=True)

    def _results_on_page(self) -> list[Product]:
        start = (self.page_no - 1) * self.results_per_page
        return self.results[start : start + self.results_per_page]

    def _show_results(self, page_no: int) -> Page:
        self.page_no = page_no
        self.product, self.options = None, {}
        shown = self._results_on_page()
        texts = [self._instruction(), "Back to Search", f"Page {page_no} (Total results: {len(self.results)})"]
        clicks = [BACK_TO_SEARCH]
        if page_no > 1:
            texts.append("< Prev")
            clicks.append(PREV_PAGE)
        if page_no * self.results_per_page < len(self.results):
            texts.append("Next >")
            clicks.append(NEXT_PAGE)
        for p in shown:
            texts += [p.asin, p.title, p.price_tag]
            clicks.append(p.asin.lower())
        self.page = Page("results", SEP.join(texts), tuple(clicks))
        return self.page

    def _show_item(self) -> Page:
        p = self.product
        assert p is not None
        texts = [self._instruction(), "Back to Search", "< Prev"]
        clicks = [BACK_TO_SEARCH, PREV_PAGE]
        self._option_keys = {}
        for group, values in p.options.items():
            texts += [group, *values]
            for v in values:  # a value two groups share selects it in the first
                self._option_keys.setdefault(normalize_target(v), (group, v))
        clicks += [k for k in self._option_keys if k and k not in (BACK_TO_SEARCH, PREV_PAGE)]
        if self.options:
            texts.append("Selected options: " + ", ".join(f"{g}: {v}" for g, v in self.options.items()))
        texts += [p.title, f"Price: {p.price_tag}", f"Rating: {p.rating}"]
        tabs = TABS if self.show_attributes else TABS[:3]
        texts += [t.capitalize() for t in tabs] + ["Buy Now"]
        clicks += [*tabs, BUY_NOW]
        self.page = Page("item", SEP.join(texts), tuple(dict.fromkeys(clicks)))
        return self.page

    def _show_tab(self, tab: str) -> Page:
        p = self.product
        assert p is not None
        if tab == "description":
            body = [p.description or "No description."]
        elif tab == "features":
            body = list(p.bullet_points) or ["No features listed."]
        elif tab == "reviews":
            body = ["No reviews yet."]
        else:
            body = [*(p.attributes or ("No attributes listed.",)), p.category, p.query, p.product_category]
        texts = [self._instruction(), "Back to Search", "< Prev", *(b for b in body if b)]
        self.page = Page(tab, SEP.join(texts), (BACK_TO_SEARCH, PREV_PAGE))
        return self.page
