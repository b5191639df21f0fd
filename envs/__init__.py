"""The world: text environments (multi-objective QA over retrieval, WebShop, web QA), task
composition, scoring, data and the retrieval stack. Envs speak strings; nothing here
imports `policies`."""

from .base import TextEnv
from .qa import QA_PROMPT, QAConfig, QAEnv
from .scoring import ObjectiveScores, exact_match, f1_score, normalize_answer, score_objectives
from .tasks import QAItem, Task, compose_tasks

__all__ = [
    "QA_PROMPT", "ObjectiveScores", "QAConfig", "QAEnv", "QAItem", "Task", "TextEnv", "compose_tasks",
    "exact_match", "f1_score", "normalize_answer", "score_objectives",
]  # fmt: skip
