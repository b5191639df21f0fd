"""A scripted expert for multi-objective QA over the generated world: the teacher of the SFT
warm start (the paper's SFT baseline distils a strong model's trajectories; offline, this
expert is that model).

    expert = QAExpert(world)
    text = expert.act(context)   # context: the decoded text the memory policy showed this turn

The expert knows, for every question of the world, which entity each hop needs and how the
answer is stated, but it acts like a memory-constrained agent: it reads only the context it
is given (under `mem1`: the prompt, its own previous turn and the latest observation), so
whatever it still needs must be in the internal state it wrote the turn before. Each turn:

1. it reads the questions from the prompt, the facts in its previous `<think>` notes, the
   newest `<information>` and how many turns are left;
2. it adds to its notes the fact the latest search was for, when a returned passage about
   the hop's subject states it (grounded: a fact it did not see is never written);
3. it writes the new notes (each answer found so far after the relation asked, "Q2 born:
   Tarsk.", and the bridge fact of a two-hop question still open, "Q3: Zentrix Labs was
   founded by Ann Lee."; nothing else, so the state grows by a few tokens per objective; the
   relation word next to an answer is what lets a small model pick the asked fact from a
   passage that states several; a "Q4: ?" entry per open question, tried as a to-do list,
   made the fine-tuned model loop on the list) and one action: a
   keyword search for the next missing hop ("<name> <relation word>", then the bare name if
   that found nothing, then it gives the hop up), or the answer to all questions in order
   once each is answered or given up, or when one turn is left.

Its episodes come from the real env and rollout loop through `ScriptedSampler`
(policies/samplers/scripted.py), so their token ids, contexts and masks are those of any
sampled episode; their EM says how often the grounded search found every hop.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .questions import Fact
from .world import World

QUESTIONS_MARKER = "Answer the following questions:"  # the last line of envs/qa.py's QA_PROMPT
UNKNOWN = "unknown"

# How a fact reads in the notes, and the keyword its search adds to the subject's name.
_SENTENCES = {
    "born_in": "{s} was born in {o}.", "birth_year": "{s} was born in {o}.", "studied_at": "{s} studied at {o}.",
    "country": "{s} is in {o}.", "capital": "The capital of {s} is {o}.", "population": "{s} has a population of {o}.",
    "founded_year": "{s} was founded in {o}.", "language": "The official language of {s} is {o}.",
    "independence_year": "{s} became independent in {o}.", "length_km": "{s} is {o} km long.", "city": "{s} is in {o}.",
    "founder": "{s} was founded by {o}.", "headquartered_in": "{s} is headquartered in {o}.",
    "author": "{s} was written by {o}.", "year": "{s} came out in {o}.", "director": "{s} was directed by {o}.",
    "based_on": "{s} is based on {o}.",
}  # fmt: skip
_KEYWORDS = {
    "born_in": "born", "birth_year": "born", "studied_at": "university", "country": "country", "capital": "capital",
    "population": "population", "founded_year": "founded", "language": "language", "independence_year": "independence",
    "length_km": "length", "city": "located", "founder": "founder", "headquartered_in": "headquarters",
    "author": "author", "year": "year", "director": "director", "based_on": "novel",
}  # fmt: skip

_THINK = re.compile(r"<think>(.*?)</think>", re.DOTALL)
_INFORMATION = re.compile(r"<information>(.*?)</information>", re.DOTALL)
_SEARCH = re.compile(r"<search>(.*?)</search>", re.DOTALL)
_TURNS_LEFT = re.compile(r"You have (\d+) turns? left")
_DOC = re.compile(r"Doc \d+\(Title: ")


@dataclass(frozen=True)
class _Hop:
    fact: Fact
    subject: str  # the subject's name, as passages title it
    stated: str  # the object as passages state it

    @property
    def sentence(self) -> str:
        return _SENTENCES[self.fact.relation].format(s=self.subject, o=self.stated)

    @property
    def queries(self) -> tuple[str, str]:
        return f"{self.subject} {_KEYWORDS[self.fact.relation]}", self.subject

    def seen_in(self, observation: str) -> bool:
        """A returned passage mentions the subject and states the object."""
        return any(self.subject in doc and self.stated in doc for doc in _DOC.split(observation)[1:])


class QAExpert:
    """The expert of the module docstring for the questions of `world` (every split)."""

    def __init__(self, world: World):
        self.world = world
        self._hops: dict[str, tuple[_Hop, ...]] = {}
        for item in world.items:
            question = item.question.strip() if item.question.strip().endswith("?") else item.question.strip() + "?"
            hops = tuple(_Hop(f, world.entity(f.subject).name, world.stated(f)) for f in world.evidence[item.id])
            self._hops.setdefault(question, hops)  # a repeated question text keeps its first item

    def knows(self, question: str) -> bool:
        return question in self._hops

    def act(self, context: str) -> str:
        questions, notes, observation, last_query, turns_left = self._read(context)
        plans = [self._hops.get(q, ()) for q in questions]
        lines, answers, next_query = [], [], None
        for i, hops in enumerate(plans, 1):
            known: list[str] = []
            given_up = f"Q{i}: not found." in notes or not hops
            answered = f"Q{i} {_KEYWORDS[hops[-1].fact.relation]}: {hops[-1].stated}." if hops else ""
            if not given_up and answered in notes:  # answered on an earlier turn
                lines.append(answered)
                answers.append(hops[-1].stated)
                continue
            for hop in hops if not given_up else ():
                if hop.sentence in notes or hop.seen_in(observation):
                    known.append(hop.sentence)
                    continue
                if next_query is None:  # the first missing hop of all: search it, or give it up
                    primary, fallback = hop.queries
                    given_up = last_query == fallback
                    next_query = None if given_up else fallback if last_query == primary else primary
                break
            if given_up:
                lines.append(f"Q{i}: not found.")
                answers.append(UNKNOWN)
            elif len(known) == len(hops):  # answered: the asked relation and the answer are all the notes keep of it
                lines.append(answered)
                answers.append(hops[-1].stated)
            else:
                answers.append(UNKNOWN)
                if known:
                    lines.append(f"Q{i}: {' '.join(known)}")
        state = " ".join(lines) if lines else "Nothing found yet."
        if next_query is None or turns_left <= 1:
            return f"<think>{state}</think><answer>{'; '.join(answers)}</answer>"
        return f"<think>{state}</think><search>{next_query}</search>"

    @staticmethod
    def _read(context: str) -> tuple[list[str], str, str, str | None, int]:
        """(questions, previous notes, latest observation, last search query, turns left)
        from the text after the task's own prompt (a few-shot demonstration comes before it)."""
        start = context.rfind(QUESTIONS_MARKER)
        if start < 0:
            raise ValueError("the context holds no QA task prompt (no 'Answer the following questions:')")
        line = context[start + len(QUESTIONS_MARKER) :].split("\n", 1)[0]
        line = line[: line.rfind("?") + 1]  # drop the chat template's end-of-turn token
        questions = [q.strip() for q in line.split(";") if q.strip()]
        rest = context[start:]
        thinks = _THINK.findall(rest)
        infos = _INFORMATION.findall(rest)
        searches = _SEARCH.findall(rest)
        left = _TURNS_LEFT.findall(infos[-1]) if infos else []
        turns_left = int(left[-1]) if left else 10**6
        if infos and "1 turn left" in infos[-1]:
            turns_left = 1
        return questions, thinks[-1] if thinks else "", infos[-1] if infos else "", searches[-1].strip() if searches else None, turns_left
