"""Questions about the generated world (envs/data/world.py), one- and two-hop, with answers.

Every question asks for a relation that gives its subject exactly one value, so it has
one answer; the answer list holds the acceptable spellings of that one value:
- an entity answer lists the entity's aliases: a person's full name and surname, a
  river's "Osk River" and "Osk", a company's "Zentrix Labs" and "Zentrix";
- a number is written in digits, also with thousands separators where a passage uses
  them ("482,000" and "482000"), and a length also with its unit ("412 km").
(Articles need no alias: "the Osk River" and "Osk River" normalise equal under SQuAD
normalisation, which the scorer applies.)

A two-hop question chains two relations through a bridge entity the question does not
name ("In which city was the founder of Zentrix Labs born?": company -> founder -> city).
Each question carries its `facts`, one per hop; the tests check that each fact is stated
in a passage about its subject.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Mapping


@dataclass(frozen=True)
class Fact:
    subject: str  # entity id
    relation: str  # attribute name on the subject ("born_in", "birth_year", ...)
    object: str  # entity id, or the literal exactly as passages state it ("1887", "482,000")


@dataclass(frozen=True)
class WorldQuestion:
    key: str  # relation path, unique per subject: "born_in", "founder.born_in"
    question: str
    answers: tuple[str, ...]
    facts: tuple[Fact, ...]  # one per hop, in hop order


def entity_questions(entity: Any, index: Mapping[str, Any], rng: random.Random) -> list[WorldQuestion]:
    """All questions whose first hop is about `entity` (the subject the question names)."""
    a, name = entity.attrs, entity.name
    ask = _Asker(entity, index, rng)
    if entity.kind == "person":
        ask("born_in", "In which city was {} born?")
        ask("birth_year", "In what year was {} born?")
        ask("studied_at", "Which university did {} attend?", "At which university did {} study?")
        ask("born_in.country", "In which country was {} born?")
    elif entity.kind == "city":
        ask("country", "In which country is the city of {} located?", "{} is a city in which country?")
        ask("population", "What is the population of {}?")
        ask("founded_year", "In what year was the city of {} founded?")
        if index[a["country"]].attrs["capital"] != entity.id:  # a capital's own passage names it
            ask("country.capital", "What is the capital of the country in which {} is located?")
    elif entity.kind == "country":
        ask("capital", "What is the capital of {}?")
        ask("language", "What is the official language of {}?")
        ask("independence_year", "In what year did {} become independent?")
    elif entity.kind == "river":
        ask("country", "In which country does the {} flow?")
        ask("length_km", "How long is the {}, in kilometres?")
        ask("country.capital", "What is the capital of the country through which the {} flows?")
    elif entity.kind == "university":
        ask("city", "In which city is {} located?")
        ask("founded_year", "In what year was {} founded?")
        ask("city.country", "In which country is {} located?")
    elif entity.kind == "company":
        ask("founder", "Who founded {}?")
        ask("headquartered_in", "In which city is {} headquartered?")
        ask("founded_year", "In what year was {} founded?")
        ask("founder.born_in", "In which city was the founder of {} born?")
        ask("founder.studied_at", "Which university did the founder of {} attend?")
        ask("founder.birth_year", "In what year was the founder of {} born?")
        ask("headquartered_in.country", "In which country is {} headquartered?")
    elif entity.kind == "book":
        ask("author", "Who wrote the novel {}?", "Who is the author of the novel {}?")
        ask("year", "In what year was the novel {} first published?")
        ask("author.born_in", "In which city was the author of the novel {} born?")
        ask("author.birth_year", "In what year was the author of the novel {} born?")
    elif entity.kind == "film":
        ask("director", "Who directed the film {}?")
        ask("year", "In what year was the film {} released?")
        ask("director.studied_at", "Which university did the director of the film {} attend?")
        if a["based_on"] is not None:
            ask("based_on", "The film {} is based on which novel?")
            ask("based_on.author", "Who wrote the novel on which the film {} is based?")
    else:
        raise ValueError(f"entity {entity.id}: unknown kind {entity.kind!r}")
    assert all(";" not in q.question for q in ask.out), name  # ';' separates composed questions
    return ask.out


class _Asker:
    """Follows a relation path from the subject and records the question, answers and facts."""

    def __init__(self, entity: Any, index: Mapping[str, Any], rng: random.Random):
        self.entity, self.index, self.rng = entity, index, rng
        self.out: list[WorldQuestion] = []

    def __call__(self, path: str, *templates: str) -> None:
        facts, current, value = [], self.entity, None
        for relation in path.split("."):
            value = current.attrs[relation]
            stated = _literal(relation, value) if value not in self.index else value
            facts.append(Fact(current.id, relation, stated))
            current = self.index.get(value)
        answers = self.index[value].aliases if value in self.index else _literal_answers(relation, value)
        question = self.rng.choice(templates).format(self.entity.name)
        self.out.append(WorldQuestion(path, question, tuple(answers), tuple(facts)))


def _literal(relation: str, value: Any) -> str:
    """A value as passages write it: thousands separators for populations, plain digits else."""
    return f"{value:,}" if relation == "population" else str(value)


def _literal_answers(relation: str, value: Any) -> tuple[str, ...]:
    text = _literal(relation, value)
    if relation == "population":
        return (text, str(value))
    if relation == "length_km":
        return (text, f"{value} km", f"{value} kilometres", f"{value} kilometers")
    return (text,)
