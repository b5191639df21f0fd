"""Multi-objective question answering over a retriever (the MEM1 retrieval-QA domain).

    env = QAEnv(retriever)
    prompt, info = env.reset(options={"task": task})   # N questions in one prompt
    obs, reward, terminated, truncated, info = env.step("<think>...</think><search>q</search>")

A search returns the top-k passages inside <information>, preceded by the remaining turn
budget. An answer "a1; ...; aN" ends the episode; it is scored per objective (EM and F1,
envs/scoring.py) and the reward is the mean (or sum) of EM or F1 over objectives.

Departures from the MEM1 reference (docs/method.md): a malformed turn (no action, unclosed tag,
several actions, empty query, runaway output) gets a corrective observation and a
configurable format penalty, and the episode goes on until the turn budget is spent,
instead of ending with reward 0; a failed search (dead retriever, timeout) becomes an
observation saying so, instead of an empty result that later trips an assertion.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from .base import TextEnv
from .protocol import QA_ACTIONS, parse_turn
from .retrieval.base import RetrievalError, Retriever
from .retrieval.corpus import format_passages
from .scoring import score_objectives
from .tasks import Task

log = logging.getLogger(__name__)

# The MEM1 prompt for retrieval QA, in our words. {questions} is "q1?; q2?; ...".
QA_PROMPT = """You will answer several questions by reasoning step by step and searching a knowledge base.

Each step you see only the questions, your own notes from the previous step, your last action and its result. Everything older is deleted, so your notes are your only memory.

At every step:
1. Inside <think> ... </think>, reason briefly and rewrite your notes: keep every fact and answer found so far, plus what you learned from the latest result.
2. Then do exactly one of:
   - <search> a short keyword query for one question </search> to look something up;
   - <answer> answer1; answer2; ... </answer> with one short answer per question, in question order, separated by semicolons, when you have them all (or have run out of turns).

Answer the following questions: {questions}"""

# A worked two-question episode shown before the task as earlier chat turns (few-shot).
# Small instruct models follow a demonstrated exchange far better than written rules; the
# entities are made up and absent from every corpus, so it leaks no answer.
QA_DEMONSTRATION = (
    ("user", QA_PROMPT.format(questions="Where was Tom Vale born?; Who founded Acme Corp?")),
    ("assistant", "<think>Notes: nothing found yet. First: where Tom Vale was born.</think><search>Tom Vale born</search>"),
    ("user", "<information>You have 4 turns left.\n\nDoc 1(Title: Tom Vale) Tom Vale is a painter. He was born in Rivertown in 1950.</information>"),
    ("assistant", "<think>Notes: Tom Vale was born in Rivertown. Next: the founder of Acme Corp.</think><search>Acme Corp founder</search>"),
    ("user", "<information>You have 3 turns left.\n\nDoc 1(Title: Acme Corp) Acme Corp is a toy maker founded by Ann Lee in 1990.</information>"),
    ("assistant", "<think>Notes: Tom Vale was born in Rivertown. Acme Corp was founded by Ann Lee. All answered.</think><answer>Rivertown; Ann Lee</answer>"),
)


@dataclass(frozen=True)
class QAConfig:
    """Settings of the QA environment (mirrored by the `env:` section of the YAML configs)."""

    topk: int = 3  # passages per search (the reference uses 3)
    max_turns: int | None = None  # fixed turn budget; None: base_turns + turns_per_objective * N
    base_turns: int = 2
    turns_per_objective: int = 2  # with base 2, N=2 gives the reference's 6 turns
    reward: str = "em"  # "em" or "f1", per objective
    reward_reduce: str = "mean"  # "mean" (fraction of objectives) or "sum" (count)
    format_penalty: float = 0.1  # subtracted for each malformed turn
    state_credit: float = 0.0  # share of that penalty forgiven when the malformed turn still closed its <think> state
    require_state: bool = True  # a turn without <think>...</think> is malformed
    # End the episode after this many malformed turns in a row (None: play the budget out).
    # The turns it skips are charged as malformed, so stopping early never pays.
    max_invalid_streak: int | None = None
    few_shot: bool = True  # show QA_DEMONSTRATION before the task
    prompt: str = QA_PROMPT

    def __post_init__(self):
        if self.reward not in ("em", "f1"):
            raise ValueError(f"env.reward={self.reward!r}: allowed 'em' or 'f1'")
        if self.reward_reduce not in ("mean", "sum"):
            raise ValueError(f"env.reward_reduce={self.reward_reduce!r}: allowed 'mean' or 'sum'")
        if self.topk < 1:
            raise ValueError(f"env.topk={self.topk}: must be at least 1")
        if not 0.0 <= self.state_credit <= 1.0:
            raise ValueError(f"env.state_credit={self.state_credit}: must be in [0, 1]")
        if self.max_invalid_streak is not None and self.max_invalid_streak < 1:
            raise ValueError(f"env.max_invalid_streak={self.max_invalid_streak}: must be at least 1 (or None)")
        if "{questions}" not in self.prompt:
            raise ValueError("env.prompt must contain the placeholder {questions}")

    def turn_budget(self, num_objectives: int) -> int:
        if self.max_turns is not None:
            return self.max_turns
        return self.base_turns + self.turns_per_objective * num_objectives


class QAEnv(TextEnv):
    stop_strings = tuple(f"</{a}>" for a in QA_ACTIONS)

    def __init__(self, retriever: Retriever, config: QAConfig | None = None):
        self.retriever = retriever
        self.config = config or QAConfig()
        self.task: Task | None = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        task = (options or {}).get("task")
        if not isinstance(task, Task):
            raise ValueError("QAEnv.reset needs options={'task': Task}")
        self.task = task
        self.turn = 0
        self.max_turns = self.config.turn_budget(task.num_objectives)
        self.searches = 0
        self.invalid = 0
        self.invalid_streak = 0
        prompt = self.config.prompt.format(questions=task.question_text)
        info = {"task_id": task.id, "num_objectives": task.num_objectives, "max_turns": self.max_turns}
        if self.config.few_shot:
            info["demonstration"] = QA_DEMONSTRATION
        return prompt, info

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if self.task is None:
            raise RuntimeError("call reset() before step()")
        self.turn += 1
        parsed = parse_turn(action, QA_ACTIONS, require_state=self.config.require_state)
        info: dict[str, Any] = {"action": parsed.action or "invalid", "valid": parsed.valid, "state_span": parsed.state_span}
        turns_left = self.max_turns - self.turn

        if parsed.valid and parsed.action == "answer":
            return "", self._score(parsed.argument, info), True, False, info

        reward = 0.0
        self.invalid_streak = 0 if parsed.valid else self.invalid_streak + 1
        if not parsed.valid:
            self.invalid += 1
            info["action"] = "invalid"
            info["error"] = parsed.error
            # Shaping (off by default): a turn that kept its internal state well-formed is less
            # wrong, which gives a small model's GRPO groups a reward spread before it acts right.
            credit = self.config.state_credit if parsed.state is not None else 0.0
            reward = -self.config.format_penalty * (1.0 - credit)
            body = f"Your last output was invalid: {parsed.error}."
        else:  # a search
            self.searches += 1
            body = self._search(parsed.argument, info)

        streak = self.config.max_invalid_streak
        if turns_left > 0 and streak is not None and self.invalid_streak >= streak:
            # lost the protocol: stop here, charging the rest of the budget as malformed turns
            info["stopped"] = f"{streak} malformed turns in a row"
            reward -= self.config.format_penalty * turns_left
            turns_left = 0
        if turns_left <= 0:  # budget spent without an answer: the task scores 0
            reward += self._score(None, info)
            return "", reward, False, True, info
        return f"<information>{self._hint(turns_left)}\n\n{body}</information>", reward, False, False, info

    def _search(self, query: str, info: dict[str, Any]) -> str:
        try:
            hits = self.retriever.search([query], self.config.topk)[0]
        except RetrievalError as e:  # a dead retriever must not kill the episode
            log.warning("search failed for %r: %s", query, e)
            info["search_error"] = str(e)
            return "The search failed (the search service did not answer). Try again or answer with what you know."
        info["doc_ids"] = [h.document.id for h in hits]
        return format_passages(hits) if hits else "No results."

    def _hint(self, turns_left: int) -> str:
        if turns_left == 1:
            return "You have 1 turn left: you must answer now."
        return f"You have {turns_left} turns left."

    def _score(self, answer: str | None, info: dict[str, Any]) -> float:
        assert self.task is not None
        scores = score_objectives(answer, self.task.answers)
        info.update(scores.as_dict())
        info.update(answer=answer, turns=self.turn, searches=self.searches, invalid_turns=self.invalid)
        per_objective = scores.em if self.config.reward == "em" else scores.f1
        total = float(sum(per_objective))
        return total / len(per_objective) if self.config.reward_reduce == "mean" else total
