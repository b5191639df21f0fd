"""WebShop as a text environment: search and click through a shop to buy what a goal asks.

    env = WebShopEnv(engine, WebShopConfig(max_turns=15))
    prompt, info = env.reset(options={"task": goal})
    obs, reward, terminated, truncated, info = env.step(
        "<think>Need red running shoes under $50.</think><answer>search[red running shoes]</answer>")

The prompt is MEM1's WebShop prompt, in our words: the instruction, the rule that
only the latest notes survive, the action format, and the search page as the first state.
Each turn the model writes its notes in <think>...</think> and one action inside
<answer>...</answer>: `search[keywords]` or `click[element]`, exactly as WebShop names them.
The observation is the new page inside <state>...</state> (as the MEM1 reference frames it):
the turns left, the page text, and "Current available actions: ...".

Clicking Buy Now ends the episode (terminated) with WebShop's score (reward.py). Running out
of turns ends it (truncated) with reward 0. Departures from the reference: a malformed turn
(no action tag, no state, several actions, an action that is neither search[...] nor
click[...]) gets a corrective observation and `format_penalty`, instead of ending the
episode with reward -1; an action the page does not offer (clicking something absent,
searching without a search box) is answered with the reason and the same page, unpenalised,
where the reference silently repeats the page.

info per step: "action" ("search", "click", "buy" or "invalid"), "valid", "state_span" (the
<think> block's character span), "page" (where the agent is now), "error" (on invalid
turns); on the last step also "reward" (the WebShop score), "success" (1.0 when the score is
1.0), "turns", "invalid_turns", "searches", the purchase and the score's parts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..base import TextEnv
from ..protocol import parse_turn
from .catalog import Goal
from .engine import WebShopEngine
from .reward import score_purchase
from .site import Browser, InvalidAction, Page, Purchase

ACTIONS = ("answer",)  # the action tag; search[...] / click[...] go inside it
_COMMAND = re.compile(r"^\s*(search|click)\s*\[(.*)\]\s*$", re.IGNORECASE | re.DOTALL)

# The MEM1 prompt for WebShop, in our words. {instruction} is the goal, {state} the first page.
WEBSHOP_PROMPT = """You are shopping in an online store for the product an instruction describes, one step at a time. Each step shows the current web page inside <state> ... </state>, ending with the actions available on it.

Each step you see only the instruction, your own notes from the previous step, your last action and the page it led to. Everything older is deleted, so your notes are your only memory.

At every step:
1. Inside <think> ... </think>, reason briefly and rewrite your notes: what the instruction asks for (product type, attributes, options, price limit), what you have searched and seen, and which product and options fit best.
2. Then write exactly one action inside <answer> ... </answer>, copied from the available actions: search[keywords] on the search page, or click[element] to open a product by its id, choose an option, read a tab (description, features, reviews), turn pages (next >, < prev), return to the search (back to search), or buy the open product (buy now).
Choose every option the instruction names before you click buy now.

Instruction: {instruction}

{state}"""

# A worked episode shown before the task (few-shot, as for QA): small instruct models follow
# a demonstrated exchange far better than written rules. The products are made up and absent
# from every catalog.
_DEMO_INSTRUCTION = "i need a blue ceramic mug that is dishwasher safe, with size 12 oz, and price lower than 20.00 dollars"
_DEMO_SEARCH = "WebShop [SEP] Instruction: [SEP] {i} [SEP] Search".format(i=_DEMO_INSTRUCTION)
WEBSHOP_DEMONSTRATION = (
    ("user", WEBSHOP_PROMPT.format(instruction=_DEMO_INSTRUCTION, state=f"<state>You have 5 turns left.\n\n{_DEMO_SEARCH}\n\nCurrent available actions: search[<keywords>]</state>")),
    ("assistant", "<think>Notes: want a blue ceramic mug, dishwasher safe, size 12 oz, under $20. Nothing searched yet.</think><answer>search[blue ceramic mug dishwasher safe]</answer>"),
    ("user", "<state>You have 4 turns left.\n\nInstruction: [SEP] ... [SEP] Back to Search [SEP] Page 1 (Total results: 2) [SEP] ZZ00MUG001 [SEP] Kilna Ceramic Coffee Mug - Dishwasher Safe, Blue [SEP] $14.99 [SEP] ZZ00MUG002 [SEP] Glass Tea Cup [SEP] $9.5\n\nCurrent available actions: click[back to search], click[zz00mug001], click[zz00mug002]</state>"),
    ("assistant", "<think>Notes: want a blue ceramic mug, dishwasher safe, 12 oz, under $20. Searched it; ZZ00MUG001 (ceramic, dishwasher safe, blue, $14.99) fits.</think><answer>click[zz00mug001]</answer>"),
    ("user", "<state>You have 3 turns left.\n\nInstruction: [SEP] ... [SEP] Back to Search [SEP] < Prev [SEP] size [SEP] 8 oz [SEP] 12 oz [SEP] Kilna Ceramic Coffee Mug - Dishwasher Safe, Blue [SEP] Price: $14.99 [SEP] Rating: N.A. [SEP] Description [SEP] Features [SEP] Reviews [SEP] Buy Now\n\nCurrent available actions: click[back to search], click[< prev], click[8 oz], click[12 oz], click[description], click[features], click[reviews], click[buy now]</state>"),
    ("assistant", "<think>Notes: want a blue ceramic mug, dishwasher safe, 12 oz, under $20. On ZZ00MUG001 ($14.99, fits); size 12 oz not chosen yet.</think><answer>click[12 oz]</answer>"),
    ("user", "<state>You have 2 turns left.\n\nInstruction: [SEP] ... [SEP] Back to Search [SEP] < Prev [SEP] size [SEP] 8 oz [SEP] 12 oz [SEP] Selected options: size: 12 oz [SEP] Kilna Ceramic Coffee Mug - Dishwasher Safe, Blue [SEP] Price: $14.99 [SEP] Rating: N.A. [SEP] Description [SEP] Features [SEP] Reviews [SEP] Buy Now\n\nCurrent available actions: click[back to search], click[< prev], click[8 oz], click[12 oz], click[description], click[features], click[reviews], click[buy now]</state>"),
    ("assistant", "<think>Notes: ZZ00MUG001 fits every requirement and size 12 oz is selected. Buy it.</think><answer>click[buy now]</answer>"),
)


@dataclass(frozen=True)
class WebShopConfig:
    """Settings of the WebShop environment (mirrored by the `env:` section, kind webshop)."""

    max_turns: int = 15
    results_per_page: int = 10  # WebShop shows 10 products per results page
    format_penalty: float = 0.0  # subtracted for each malformed turn (bad tags, no state)
    require_state: bool = True  # a turn without <think>...</think> is malformed
    show_attributes: bool = False  # offer WebShop's Attributes tab on item pages
    few_shot: bool = True  # show WEBSHOP_DEMONSTRATION before the task
    prompt: str = WEBSHOP_PROMPT

    def __post_init__(self):
        if self.max_turns < 1:
            raise ValueError(f"env.max_turns={self.max_turns}: must be at least 1")
        if self.results_per_page < 1:
            raise ValueError(f"env.results_per_page={self.results_per_page}: must be at least 1")
        if self.format_penalty < 0:
            raise ValueError(f"env.format_penalty={self.format_penalty}: must be >= 0 (it is subtracted)")
        for key in ("{instruction}", "{state}"):
            if key not in self.prompt:
                raise ValueError(f"env.prompt must contain the placeholder {key}")


class WebShopEnv(TextEnv):
    stop_strings = tuple(f"</{a}>" for a in ACTIONS)

    def __init__(self, engine: WebShopEngine, config: WebShopConfig | None = None):
        self.engine = engine
        self.config = config or WebShopConfig()
        self.goal: Goal | None = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        goal = (options or {}).get("task")
        if not isinstance(goal, Goal):
            raise ValueError(f"WebShopEnv.reset needs options={{'task': Goal}}, got {type(goal).__name__}")
        if goal.asin not in self.engine.catalog.by_asin:
            raise ValueError(f"goal {goal.id!r} is about product {goal.asin!r}, which this engine's catalog lacks")
        self.goal = goal
        self.browser = Browser(
            self.engine, goal.instruction, results_per_page=self.config.results_per_page, show_attributes=self.config.show_attributes
        )
        self.turn = 0
        self.invalid = 0
        self.searches = 0
        prompt = self.config.prompt.format(instruction=goal.instruction, state=self._state(self.browser.page))
        info: dict[str, Any] = {"task_id": goal.id, "goal_asin": goal.asin, "max_turns": self.config.max_turns}
        if self.config.few_shot:
            info["demonstration"] = WEBSHOP_DEMONSTRATION
        return prompt, info

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if self.goal is None:
            raise RuntimeError("call reset() before step()")
        self.turn += 1
        parsed = parse_turn(action, ACTIONS, require_state=self.config.require_state)
        info: dict[str, Any] = {"action": "invalid", "valid": False, "state_span": parsed.state_span}
        reward = 0.0
        error = None
        outcome: Page | Purchase | None = None
        if not parsed.valid:
            error = f"{parsed.error}. Write <think> your notes </think> then <answer> one action </answer>"
            reward = -self.config.format_penalty
        else:
            command = _COMMAND.match(parsed.argument)
            if command is None:
                error = f"'{parsed.argument[:80]}' is not an action; write search[keywords] or click[element] inside <answer>"
                reward = -self.config.format_penalty
            else:
                verb, argument = command.group(1).lower(), command.group(2)
                try:
                    outcome = self.browser.search(argument) if verb == "search" else self.browser.click(argument)
                except InvalidAction as e:
                    error = str(e)
                else:
                    info.update(action="buy" if isinstance(outcome, Purchase) else verb, valid=True)
                    self.searches += verb == "search"

        info["page"] = self.browser.page.name
        if isinstance(outcome, Purchase):
            return "", reward + self._finish(info, outcome), True, False, info
        if error is not None:
            self.invalid += 1
            info["error"] = error
        turns_left = self.config.max_turns - self.turn
        if turns_left <= 0:  # budget spent without a purchase: the task scores 0
            return "", reward + self._finish(info, None), False, True, info
        return self._state(self.browser.page, turns_left, error), reward, False, False, info

    def _state(self, page: Page, turns_left: int | None = None, error: str | None = None) -> str:
        turns_left = self.config.max_turns if turns_left is None else turns_left
        if turns_left == 1:
            hint = "This is your last turn: click[buy now] on a product page, or the episode ends without a purchase."
        else:
            hint = f"You have {turns_left} turns left."
        notice = f"Invalid action: {error}. You are still on the same page.\n\n" if error else ""
        return f"<state>{hint}\n\n{notice}{page.text}\n\nCurrent available actions: {', '.join(page.actions)}</state>"

    def _finish(self, info: dict[str, Any], purchase: Purchase | None) -> float:
        assert self.goal is not None
        info.update(turns=self.turn, invalid_turns=self.invalid, searches=self.searches, goal_asin=self.goal.asin)
        if purchase is None:
            info.update(reward=0.0, success=0.0)
            return 0.0
        score = score_purchase(purchase.product, self.goal, purchase.price, purchase.options)
        info.update(
            reward=score.reward,
            success=1.0 if score.reward == 1.0 else 0.0,
            asin=purchase.product.asin,
            options=dict(purchase.options),
            price=purchase.price,
            **{f"score_{k}": v for k, v in score.as_info().items() if k != "reward"},
        )
        return score.reward
