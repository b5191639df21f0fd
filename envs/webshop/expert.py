"""A scripted WebShop expert: the teacher whose episodes warm-start a model with supervised
fine-tuning before RL (as QAExpert in envs/data/expert.py does for QA).

    expert = WebShopExpert(catalog)
    text = expert.act(context)   # context: the decoded text the memory policy showed this turn
    sampler = ScriptedSampler(expert.act, tokenizer)   # plays through experiments/rollout.py

The expert knows every goal of the catalog (its product, attributes, options and price
bound), but it acts like a memory-constrained agent: it reads only the context it is given.
Under `mem1` that is the prompt, its own previous turn and the latest page, so whatever it
must remember across pages (how many searches it made, which product it opened, which
options it chose) has to be in the `<think>` notes it wrote the turn before. Acting from the
text alone is what makes its traces worth imitating: a model that copies them sees exactly
what the expert saw, and learns to write notes that carry what the next turn needs.

Each turn it finds the task's instruction (the last `Instruction:` line of a prompt, after
any few-shot demonstration), looks the goal up, and answers the newest page:

- search page: search the instruction; after one search that did not list the product,
  search its key words (type, attributes, options) instead;
- results page: open the goal's product when it is listed, else turn to the next page
  (through WebShop's 50 results), else open a listed product that would score as well, else
  search again once, else open the listed product that fits the goal best (by WebShop's own
  score, which the expert can compute: it knows the catalog); with too few turns left to
  page on and still buy, it stops paging;
- item page: click each goal option not chosen yet (the notes list what was chosen; the
  page's "Selected options" confirms it), then buy now; on its last turn it buys at once;
- a tab page (description, features, ...): back to the item.

The notes are one short line: the goal in brief, the search count, the open product, the
options chosen, and what comes next, e.g.
`Want running shoes: non slip; black, 8; under $50.00. Searches: 1. Open: b0abc12345.
Chosen: black. Next: choose 8.`
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .catalog import NO_PRICE_BOUND, Catalog, Goal, Product
from .engine import SEARCH_RETURN_N
from .reward import FUZZY_THRESHOLD, fuzzy_ratio, normalize_color, score_purchase
from .site import BACK_TO_SEARCH, BUY_NOW, NEXT_PAGE, PREV_PAGE, SEP, normalize_target

MAX_SEARCHES = 2  # the instruction, then its key words

_INSTRUCTION = re.compile(r"^Instruction: (?!\[SEP\])(.+)$", re.MULTILINE)  # the prompt's line, not a page's
_PAGE_INSTRUCTION = re.compile(r"Instruction: \[SEP\] (.+?) \[SEP\]")
_THINK = re.compile(r"<think>(.*?)</think>", re.DOTALL)
_STATE = re.compile(r"<state>(.*?)</state>", re.DOTALL)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_TURNS_LEFT = re.compile(r"You have (\d+) turns? left")
_RESULTS = re.compile(r"Page (\d+) \(Total results: (\d+)\)")
_ACTIONS = "\n\nCurrent available actions: "
_SEARCHES = re.compile(r"Searches: (\d+)\.")
_OPEN = re.compile(r"Open: (\S+?)\.")
_CHOSEN = re.compile(r"Chosen: (.*?)\. Next:")
_WORD = re.compile(r"[a-z0-9]+(?:[-'.][a-z0-9]+)*")


def _key(text: str) -> str:
    return " ".join(text.lower().split())


def _click(target: str) -> str:
    return f"click[{target}]"


@dataclass(frozen=True)
class _Page:
    """The newest page as the context shows it."""

    text: str  # the page's own text (WebShop's [SEP]-joined strings)
    actions: str  # "search[<keywords>], click[...], ..." as the env lists them
    turns_left: int
    invalid: bool  # the env refused the previous action (the page did not change)

    def offers(self, target: str) -> bool:
        return f", click[{target}]," in f", {self.actions},"

    @property
    def kind(self) -> str:
        if self.actions.startswith("search["):
            return "search"
        if _RESULTS.search(self.text):
            return "results"
        if self.offers(BUY_NOW):
            return "item"
        return "tab"

    @property
    def parts(self) -> list[str]:
        return self.text.split(SEP)


@dataclass(frozen=True)
class _Notes:
    """What the previous turn's <think> said (nothing before the first turn)."""

    searches: int = 0
    open_asin: str | None = None
    chosen: tuple[str, ...] = ()

    @classmethod
    def read(cls, text: str | None) -> "_Notes":
        if not text:
            return cls()
        searches, open_asin, chosen = _SEARCHES.search(text), _OPEN.search(text), _CHOSEN.search(text)
        values = () if chosen is None or chosen.group(1) == "none" else tuple(chosen.group(1).split("; "))
        return cls(int(searches.group(1)) if searches else 0, open_asin.group(1) if open_asin else None, values)


class WebShopExpert:
    """The expert of the module docstring for the goals of `catalog` (every split)."""

    def __init__(self, catalog: Catalog):
        self.catalog = catalog
        self._goals: dict[str, Goal] = {}
        self._targets: dict[str, list[str]] = {}  # instruction -> the products of every goal worded so
        for g in catalog.goals:
            self._goals.setdefault(_key(g.instruction), g)  # a repeated instruction keeps its first goal ...
            self._targets.setdefault(_key(g.instruction), []).append(g.asin.lower())  # ... and any of its products will do
        self._by_asin = {p.asin.lower(): p for p in catalog.products}
        self._by_title: dict[str, list[Product]] = {}
        for p in catalog.products:
            self._by_title.setdefault(_key(p.title), []).append(p)

    def knows(self, instruction: str) -> bool:
        return _key(instruction) in self._goals

    # ------------------------------------------------------------------ the turn

    def act(self, context: str) -> str:
        goal, notes, page, last_action = self._read(context)
        kind = page.kind
        if kind == "search":
            return self._search(goal, notes)
        if kind == "results":
            return self._results(goal, notes, page)
        if kind == "item":
            return self._item(goal, notes, page, last_action)
        # a tab page offers only < Prev (back to the item) and Back to Search
        return self._turn(goal, notes, _click(PREV_PAGE if page.offers(PREV_PAGE) else BACK_TO_SEARCH), "back to the product")

    def _search(self, goal: Goal, notes: _Notes) -> str:
        n = notes.searches + 1
        # the instruction's own words find its product best (BM25); its key words are the retry,
        # the bare product type the last resort
        query = goal.instruction if n == 1 else self._keywords(goal) if n == 2 else goal.query or self._keywords(goal)
        return self._turn(goal, _Notes(n), f"search[{query}]", "look for a product that fits in the results")

    def _results(self, goal: Goal, notes: _Notes, page: _Page) -> str:
        searches = max(notes.searches, 1)
        m = _RESULTS.search(page.text)
        page_no = int(m.group(1)) if m else 1
        listed = [self._by_asin[a] for a in re.findall(r"click\[([^\]]+)\]", page.actions) if a in self._by_asin]
        finish = 2 + len(goal.goal_options)  # open, one click per option, buy
        target = next((a for a in self._targets.get(_key(goal.instruction), [goal.asin.lower()]) if page.offers(a)), None)
        if target is not None:
            return self._open(goal, searches, self._by_asin[target])
        more = page.offers(NEXT_PAGE) and page_no * len(listed) < SEARCH_RETURN_N  # WebShop's results end at 50
        if more and page.turns_left - 1 >= finish:
            return self._turn(goal, _Notes(searches), _click(NEXT_PAGE), f"the product is not on page {page_no}; check page {page_no + 1}")
        fits = [(self._fit(goal, p), p) for p in listed]
        best = max(fits, key=lambda f: f[0], default=None)
        if best is not None and best[0][0] == 1.0:  # another product scores as well: no need to search again
            return self._open(goal, searches, best[1])
        if searches < MAX_SEARCHES and page.turns_left - 2 >= finish:
            return self._turn(goal, _Notes(searches), _click(BACK_TO_SEARCH), "the product is not in these results; search the key words")
        if best is not None:  # out of pages, searches or turns: the listed product closest to the goal
            return self._open(goal, searches, best[1])
        return self._turn(goal, _Notes(searches), _click(BACK_TO_SEARCH), "nothing listed; search again")

    def _open(self, goal: Goal, searches: int, product: Product) -> str:
        options = self._options(goal, product)
        then = f"choose {', '.join(v for _, v in options)}" if options else "buy it"
        return self._turn(goal, _Notes(searches, product.asin.lower()), _click(product.asin.lower()), then)

    def _item(self, goal: Goal, notes: _Notes, page: _Page, last_action: str | None) -> str:
        product = self._shown_product(page, notes.open_asin)
        if product is None:  # not a product of this catalog: nothing to choose, buy what is open
            return self._turn(goal, notes, _click(BUY_NOW), "done")
        asin = product.asin.lower()
        chosen = list(notes.chosen) if notes.open_asin == asin else []
        selected = next((p for p in page.parts if p.startswith("Selected options: ")), "")
        options = self._options(goal, product)
        for group, value in options:
            if value not in chosen and f"{group}: {value}" in selected:
                chosen.append(value)  # the page shows it selected (say, notes cut short)
        refused = page.invalid and last_action is not None and last_action.startswith("click[")
        todo = [(g, v) for g, v in options if v not in chosen and page.offers(normalize_target(v))]
        # one turn left, or the page refused the last option click: buy now rather than end with nothing
        if todo and page.turns_left > 1 and not refused:
            value = todo[0][1]
            chosen.append(value)
            rest = [v for _, v in todo[1:]]
            then = f"choose {', '.join(rest)}" if rest else "buy now"
            return self._turn(goal, _Notes(notes.searches, asin, tuple(chosen)), _click(normalize_target(value)), then)
        return self._turn(goal, _Notes(notes.searches, asin, tuple(chosen)), _click(BUY_NOW), "done")

    # ------------------------------------------------------------------ reading the context

    def _read(self, context: str) -> tuple[Goal, _Notes, _Page, str | None]:
        """(goal, previous notes, newest page, previous action) from the text after the task's
        own prompt line (a few-shot demonstration, with its own instruction, comes before it)."""
        matches = list(_INSTRUCTION.finditer(context))
        if matches:
            instruction, rest = matches[-1].group(1).strip(), context[matches[-1].end() :]
        else:  # a custom prompt without the line: every page repeats the instruction
            pages = _PAGE_INSTRUCTION.findall(context)
            if not pages:
                raise ValueError("the context holds no WebShop instruction (no 'Instruction:' line or page)")
            instruction = pages[-1].strip()
            first = context.find(f"Instruction: [SEP] {instruction} [SEP]")  # the task's first page
            rest = context[max(0, context.rfind("<state>", 0, first)) :]
        goal = self._goal(instruction)
        states = _STATE.findall(rest)
        if not states:
            raise ValueError("the context holds no WebShop page (<state> ... </state>) after the instruction")
        thinks, answers = _THINK.findall(rest), _ANSWER.findall(rest)
        return goal, _Notes.read(thinks[-1] if thinks else None), self._page(states[-1]), answers[-1].strip() if answers else None

    def _goal(self, instruction: str) -> Goal:
        goal = self._goals.get(_key(instruction))
        if goal is not None:
            return goal
        # decoding may respace punctuation: fall back to the goal sharing the most words
        words = set(_WORD.findall(instruction.lower()))
        best = max(self._goals.values(), key=lambda g: len(words & set(_WORD.findall(g.instruction.lower()))), default=None)
        if best is None or len(words ^ set(_WORD.findall(best.instruction.lower()))) > max(2, len(words) // 10):
            raise ValueError(f"no goal of the catalog has the instruction {instruction[:120]!r}")
        return best

    @staticmethod
    def _page(state: str) -> _Page:
        body, listed, actions = state.rpartition(_ACTIONS)
        if not listed:
            body, actions = state, ""
        hint, _, text = body.partition("\n\n")
        left = _TURNS_LEFT.search(hint)
        turns_left = 1 if "last turn" in hint else int(left.group(1)) if left else 10**6
        invalid = text.startswith("Invalid action:")
        if invalid:
            text = text.partition("\n\n")[2]
        return _Page(text.strip(), actions.strip(), turns_left, invalid)

    def _shown_product(self, page: _Page, open_asin: str | None) -> Product | None:
        """The product on the item page: by its title (the page shows no asin), the notes'
        asin telling apart products that share a title."""
        for part in page.parts:
            same = self._by_title.get(_key(part))
            if same:
                return next((p for p in same if p.asin.lower() == open_asin), same[0])
        return self._by_asin.get(open_asin) if open_asin else None

    # ------------------------------------------------------------------ the goal against products

    @staticmethod
    def _options(goal: Goal, product: Product) -> list[tuple[str, str]]:
        """(group, value) of the product for each goal option it offers: the same value, or
        else the one WebShop's option score would match (fuzzy, colours reduced)."""
        found = []
        for wanted in goal.goal_options:
            best, best_ratio = None, FUZZY_THRESHOLD
            for group, values in product.options.items():
                for v in values:
                    if _key(v) == _key(wanted):
                        best, best_ratio = (group, v), 101
                    elif (r := fuzzy_ratio(normalize_color(v), normalize_color(wanted))) > best_ratio:
                        best, best_ratio = (group, v), r
            if best is not None and best not in found:
                found.append(best)
        return found

    def _fit(self, goal: Goal, product: Product) -> tuple[float, float]:
        """What buying `product` with the goal's options would score (WebShop's score, which
        the expert may compute: it knows the catalog), then the share of the goal title's words
        its title has (to break ties)."""
        options = {group: value for group, value in self._options(goal, product)}
        reward = score_purchase(product, goal, product.price, options).reward
        title = set(_WORD.findall(goal.name.lower()))
        return reward, len(title & set(_WORD.findall(product.title.lower()))) / max(1, len(title))

    @staticmethod
    def _keywords(goal: Goal) -> str:
        words = [goal.query, *goal.attributes, *goal.goal_options]
        return " ".join(dict.fromkeys(w for w in words if w))

    # ------------------------------------------------------------------ writing the turn

    @staticmethod
    def _want(goal: Goal) -> str:
        parts = [", ".join(goal.attributes)] if goal.attributes else []
        if goal.goal_options:
            parts.append(", ".join(goal.goal_options))
        if goal.price_upper < NO_PRICE_BOUND:
            parts.append(f"under ${goal.price_upper:.2f}")
        thing = goal.query or "the product"
        return f"Want {thing}: {'; '.join(parts)}." if parts else f"Want {thing}."

    def _turn(self, goal: Goal, notes: _Notes, action: str, then: str) -> str:
        state = [self._want(goal), f"Searches: {notes.searches}."]
        if notes.open_asin:
            state += [f"Open: {notes.open_asin}.", f"Chosen: {'; '.join(notes.chosen) or 'none'}."]
        state.append(f"Next: {then}.")
        return f"<think>{' '.join(state)}</think><answer>{action}</answer>"
