"""The MEM1 tag protocol (docs/method.md): per turn the model writes its internal state, then exactly
one action.

    <think> reasoning + cumulative summary </think><search> keywords </search>
    <think> ... </think><answer> a1; a2; ...; aN </answer>

WebShop uses the same state tag and one action tag holding `search[...]` or `click[...]`
(`parse_turn(text, actions=("answer",))`, as the MEM1 reference does). This module parses one turn's text and says,
when the text breaks the protocol, what is wrong in words the model can act on. It never
raises on model output.

Departure from the reference: the reference ends an episode with reward 0 at the first
format error and its validity checks were partly dead code; here every rule below is
checked, and the environment turns a violation into a corrective observation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

STATE_TAG = "think"
QA_ACTIONS = ("search", "answer")
MAX_TEXT_CHARS = 12_000  # longer output is a runaway generation, not a turn
MAX_ARGUMENT_CHARS = 1_000
_SURROGATE = re.compile(r"[\ud800-\udfff]")


@dataclass(frozen=True)
class ParsedTurn:
    """One turn's text, parsed. `error` is None when the text follows the protocol."""

    action: str | None  # the action tag used ("search", "answer", ...), None if none
    argument: str  # the action's content, stripped
    state: str | None  # the internal state (inside <think>), None if absent
    state_span: tuple[int, int] | None  # character span of the whole <think>...</think>
    error: str | None = None

    @property
    def valid(self) -> bool:
        return self.error is None


def cut_after_action(text: str, actions: tuple[str, ...] = QA_ACTIONS) -> str:
    """Drop everything after the first closing action tag (the protocol's rule)."""
    ends = [m.end() for a in actions for m in [re.search(rf"</{a}>", text)] if m]
    return text[: min(ends)] if ends else text


def parse_turn(
    text: str,
    actions: tuple[str, ...] = QA_ACTIONS,
    *,
    require_state: bool = True,
    max_text_chars: int = MAX_TEXT_CHARS,
    max_argument_chars: int = MAX_ARGUMENT_CHARS,
) -> ParsedTurn:
    # A lone surrogate (half an emoji from a JSON trace, a surrogateescape'd byte) is not
    # Unicode that any wire can encode; U+FFFD in its place keeps every offset.
    text = _SURROGATE.sub("\ufffd", cut_after_action(text, actions))
    state, state_span = _state(text)
    if len(text) > max_text_chars:
        return ParsedTurn(None, "", state, state_span, f"the output is too long ({len(text)} characters); keep each turn short")

    opened = [(m.start(), m.group(1)) for m in re.finditer(rf"<({'|'.join(actions)})>", text)]
    closed = [(m.start(), m.group(1)) for m in re.finditer(rf"</({'|'.join(actions)})>", text)]
    tags = " or ".join(f"<{a}> ... </{a}>" for a in actions)
    if not opened and not closed:
        return ParsedTurn(None, "", state, state_span, f"no action found; end every turn with exactly one {tags}")
    if len(opened) > 1:
        return ParsedTurn(None, "", state, state_span, "several actions in one turn; write exactly one action per turn")
    if not closed:
        a = opened[0][1]
        return ParsedTurn(a, "", state, state_span, f"the <{a}> tag is not closed; close it with </{a}>")
    if not opened or opened[0][1] != closed[0][1] or opened[0][0] > closed[0][0]:
        return ParsedTurn(None, "", state, state_span, f"the action tags do not match; write {tags}")

    action = opened[0][1]
    start = opened[0][0] + len(action) + 2
    argument = text[start : closed[0][0]].strip()
    if re.search(rf"</?{STATE_TAG}>", argument):
        return ParsedTurn(action, argument, state, state_span, f"<{STATE_TAG}> belongs before the action, not inside it")
    if require_state:
        if state is None:
            return ParsedTurn(action, argument, None, None, f"write your updated summary in <{STATE_TAG}> ... </{STATE_TAG}> before the action")
        if state_span is not None and state_span[0] > opened[0][0]:
            return ParsedTurn(action, argument, state, state_span, f"<{STATE_TAG}> must come before the action")
    if not argument:
        return ParsedTurn(action, argument, state, state_span, f"the <{action}> action is empty")
    if len(argument) > max_argument_chars:
        return ParsedTurn(action, argument[:max_argument_chars], state, state_span, f"the <{action}> content is too long; keep it under {max_argument_chars} characters")
    return ParsedTurn(action, argument, state, state_span)


def _state(text: str) -> tuple[str | None, tuple[int, int] | None]:
    """The first complete <think>...</think> block and its span (an unclosed one is none).

    Two finds, not a lazy regex: the regex retries from every opening tag and scans to the
    end each time, which takes seconds on a runaway output of repeated <think> tags."""
    opening, closing = f"<{STATE_TAG}>", f"</{STATE_TAG}>"
    start = text.find(opening)
    end = text.find(closing, start + len(opening)) if start >= 0 else -1
    if end < 0:  # no later opening tag can have a closing one either
        return None, None
    return text[start + len(opening) : end].strip(), (start, end + len(closing))
