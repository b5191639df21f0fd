"""Made-up names for the generated world, built from syllables and unique across the world.

A small language model cannot know facts about "Quorveth" or "Talsinor", so every question
about the world has to be answered by searching the corpus, which is the skill MEM1 trains.

    names = NameGenerator(random.Random(0))
    names.stem()            # 'Velqorin': a fresh capitalised stem, never returned twice
    names.person()          # ('Ilvara', 'Quensett'): first name from a shared pool, unique surname

Every stem any caller ever gets from one generator is distinct from every other (also after
lower-casing), so names, surnames and short aliases ("Osk" for "Osk River") never collide,
and an answer string names exactly one entity. Stems are 5-9 pronounceable letters of plain ASCII, so a
word tokenizer (BM25) keeps each one a single token. Deterministic: all choices come from
the `random.Random` passed in, never from `hash()` or set iteration order.
"""

from __future__ import annotations

import random

_ONSETS = (
    "b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z",
    "br", "dr", "gr", "kr", "tr", "th", "sh", "st", "vr", "qu",
)  # fmt: skip
_VOWELS = ("a", "e", "i", "o", "u", "a", "e", "i", "o", "ae", "ei", "ou", "y")
_CODAS = ("", "", "", "", "n", "r", "l", "s", "th", "rn", "nd", "sk", "x", "m", "rt")
_VOWEL_LETTERS = frozenset("aeiouy")


def _pronounceable(word: str) -> bool:
    """No doubled letters and no runs of three consonants or three vowels."""
    run_c = run_v = 0
    for i, ch in enumerate(word):
        if i and ch == word[i - 1]:
            return False
        run_v, run_c = (run_v + 1, 0) if ch in _VOWEL_LETTERS else (0, run_c + 1)
        if run_c > 2 or run_v > 2:
            return False
    return True


# Real words and names the syllables can spell; rejecting them keeps every name made up.
# Not exhaustive, only the likely hits of these syllables at these lengths.
_REAL_WORDS = frozenset(
    "baron basin bison caron daring doris dylan faith kevin laser lemon linda maria melon "
    "minor moron nylon paris pilot radar rival robin rumor salon satan sonar tenor titan "
    "toxin trial venus vigil viral visor zebra manor tudor lotus"
    .split()
)  # fmt: skip


class NameGenerator:
    """Hands out capitalised syllable stems, each unique for the generator's lifetime."""

    def __init__(self, rng: random.Random, *, first_names: int = 80):
        self._rng = rng
        self._taken: set[str] = set()  # membership only; never iterated (order would vary)
        self._first_names = [self.stem() for _ in range(first_names)]

    def stem(self, min_len: int = 5, max_len: int = 9) -> str:
        """A fresh stem; retries until one is new (the space is millions of stems)."""
        for _ in range(10_000):
            syllables = self._rng.choice((2, 2, 2, 3))
            word = "".join(
                self._rng.choice(_ONSETS) + self._rng.choice(_VOWELS) + self._rng.choice(_CODAS)
                for _ in range(syllables)
            )
            if not (min_len <= len(word) <= max_len) or word in _REAL_WORDS or word in self._taken:
                continue
            if not _pronounceable(word):
                continue
            self._taken.add(word)
            return word.capitalize()
        raise RuntimeError("name space exhausted: ask for fewer entities")  # not reachable at our sizes

    def person(self) -> tuple[str, str]:
        """(first name, surname): first names repeat across people, surnames never do."""
        return self._rng.choice(self._first_names), self.stem()
