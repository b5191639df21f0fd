"""Answer scoring: exact match and token F1 after SQuAD normalisation, per objective.

Normalisation (SQuAD v1.1, as the MEM1 paper uses it): lower-case, drop punctuation, drop the
articles a/an/the, collapse whitespace. A prediction scores against the best of its
acceptable gold strings. A multi-objective answer "a1; a2; ...; aN" is split on ';' and
scored objective by objective; a missing answer scores 0.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    text = text.lower().translate(_PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, golds: Sequence[str]) -> float:
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(g) for g in golds))


def f1_score(prediction: str, golds: Sequence[str]) -> float:
    pred_tokens = normalize_answer(prediction).split()
    best = 0.0
    for gold in golds:
        gold_tokens = normalize_answer(gold).split()
        common = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
        if not pred_tokens or not gold_tokens:
            score = float(pred_tokens == gold_tokens)  # both empty: 1, one empty: 0
        elif common == 0:
            score = 0.0
        else:
            precision, recall = common / len(pred_tokens), common / len(gold_tokens)
            score = 2 * precision * recall / (precision + recall)
        best = max(best, score)
    return best


def split_answers(answer: str, n: int) -> list[str]:
    """'a1; a2; a3' -> ['a1', 'a2', 'a3'], padded with '' (or cut) to n objectives."""
    parts = [p.strip() for p in answer.split(";")] if answer.strip() else []
    return (parts + [""] * n)[:n]


@dataclass(frozen=True)
class ObjectiveScores:
    """Per-objective scores of one answered (or unanswered) task."""

    em: tuple[float, ...]
    f1: tuple[float, ...]

    @property
    def em_sum(self) -> float:
        return float(sum(self.em))

    @property
    def em_mean(self) -> float:
        return self.em_sum / len(self.em)

    @property
    def f1_sum(self) -> float:
        return float(sum(self.f1))

    @property
    def f1_mean(self) -> float:
        return self.f1_sum / len(self.f1)

    def as_dict(self) -> dict[str, float | list[float]]:
        return {
            "em": list(self.em), "f1": list(self.f1),
            "em_sum": self.em_sum, "em_mean": self.em_mean, "f1_sum": self.f1_sum, "f1_mean": self.f1_mean,
        }


def score_objectives(answer: str | None, golds: Sequence[Sequence[str]]) -> ObjectiveScores:
    """Score 'a1; ...; aN' against N gold lists; no answer at all scores 0 everywhere."""
    n = len(golds)
    preds = split_answers(answer or "", n)
    return ObjectiveScores(
        em=tuple(exact_match(p, g) if p else 0.0 for p, g in zip(preds, golds)),
        f1=tuple(f1_score(p, g) if p else 0.0 for p, g in zip(preds, golds)),
    )
