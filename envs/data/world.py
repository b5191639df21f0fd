"""A generated world: made-up entities, their relations, passages about them, and questions.

MEM1 composes N single questions into one N-objective task (docs/method.md). Offline and on a
small model that needs questions whose answers the model cannot know and must search for,
and enough of them to compose hundreds of 16-objective tasks. This module makes such a
world from a seed:

    world = generate_world(seed=0)                # "default": ~520 entities, ~1,000 passages
    world.documents                                # corpus passages (Document, title = entity name)
    world.items                                    # QAItems, hops 1 and 2
    world.split_items("test")                      # the deterministic held-out split
    files = world.write("data/world")              # corpus.jsonl + questions_{train,test}.parquet

Entities: countries, cities, rivers, universities, people, companies, books, films, with
syllable names (envs/data/names.py). Relations: a city lies in a country, a country has a
capital city, a person was born in a city and studied at a university, a company was
founded by a person and has its headquarters in a city, a book has an author, a film a
director and possibly a source novel, a river flows through cities of one country. Each
relation gives its subject exactly one value, so every question has one answer.
Passages (envs/data/passages.py) state the facts; questions (envs/data/questions.py) ask
for one fact (hops=1) or chain two (hops=2: "In which city was the founder of X born?").

Where this departs from the paper: the paper composes NQ and HotpotQA questions over
Wikipedia. Those load through envs/data/loaders.py; this world is the offline default,
whose questions a model can only answer by searching.

Determinism: everything comes from one `random.Random(seed)` consumed in a fixed order;
no `hash()` of strings, no set iteration. The train/test split hashes the entity a
question is about with SHA-256, so all questions about one entity fall on the same side
(a policy cannot memorise a test entity's facts from training questions about it).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Mapping

from ..retrieval.corpus import Document, write_corpus_jsonl
from ..tasks import QAItem
from .loaders import write_items_parquet
from .names import NameGenerator
from .passages import entity_passages
from .questions import Fact, entity_questions

SPLITS = ("train", "test")


@dataclass(frozen=True)
class Entity:
    id: str  # "<kind>-<index>", e.g. "city-0012"
    kind: str  # "country", "city", "river", "university", "person", "company", "book", "film"
    name: str  # canonical name; also the title of its passages
    aliases: tuple[str, ...]  # answer strings that name it, canonical name first
    attrs: Mapping[str, Any] = field(default_factory=dict, hash=False)  # relations hold entity ids; read-only


@dataclass(frozen=True)
class WorldSize:
    """How many entities of each kind. People take one role each: founder of one company,
    writer of one or more books, director of one or more films, or another occupation."""

    countries: int
    cities_per_country: int
    rivers: int
    universities: int
    people: int
    companies: int
    books: int
    films: int

    @property
    def writers(self) -> int:
        return max(1, (2 * self.books + 2) // 3)

    @property
    def directors(self) -> int:
        return max(1, (2 * self.films + 2) // 3)

    @property
    def total(self) -> int:
        return (
            self.countries * (1 + self.cities_per_country) + self.rivers + self.universities
            + self.people + self.companies + self.books + self.films
        )  # fmt: skip

    def validate(self) -> None:
        for name in ("countries", "universities", "companies", "books", "films"):
            if getattr(self, name) < 1:
                raise ValueError(f"world size: {name} must be >= 1, got {getattr(self, name)}")
        if self.cities_per_country < 2:
            raise ValueError(f"world size: cities_per_country must be >= 2, got {self.cities_per_country}")
        needed = self.companies + self.writers + self.directors + 1
        if self.people < needed:
            raise ValueError(f"world size: {self.people} people cannot fill {needed} roles; raise `people`")


SIZES = {
    "small": WorldSize(
        countries=6, cities_per_country=5, rivers=8, universities=12, people=72, companies=16, books=14, films=12
    ),
    "default": WorldSize(
        countries=16, cities_per_country=6, rivers=24, universities=40, people=220, companies=50, books=40, films=36
    ),
}
MIN_ENTITIES = 60
_SCALED = ("rivers", "universities", "people", "companies", "books", "films")


def resolve_size(size: str | int | WorldSize) -> WorldSize:
    """A preset name, a target entity count (the default proportions scaled), or a WorldSize."""
    if isinstance(size, WorldSize):
        size.validate()
        return size
    if isinstance(size, str):
        if size not in SIZES:
            raise ValueError(f"world size {size!r} unknown; use one of {sorted(SIZES)} or an entity count")
        return SIZES[size]
    if isinstance(size, bool) or not isinstance(size, int) or size < MIN_ENTITIES:
        raise ValueError(f"world size must be a preset {sorted(SIZES)} or an int >= {MIN_ENTITIES}, got {size!r}")
    base = SIZES["default"]
    scale = size / base.total
    scaled = WorldSize(
        countries=max(3, round(base.countries * scale)),
        cities_per_country=base.cities_per_country,
        **{k: max(2, round(getattr(base, k) * scale)) for k in _SCALED},
    )
    scaled.validate()
    return scaled


def split_of(key: str, test_fraction: float) -> str:
    """'test' for a stable `test_fraction` of keys, else 'train' (SHA-256, not hash())."""
    bucket = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") / 2**64
    return "test" if bucket < test_fraction else "train"


@dataclass(frozen=True)
class WorldFiles:
    corpus: Path  # Search-R1 corpus JSONL
    questions: Mapping[str, Path]  # split -> Search-R1 single-question parquet


@dataclass(frozen=True)
class World:
    seed: int
    size: WorldSize
    entities: tuple[Entity, ...]
    documents: tuple[Document, ...]
    items: tuple[QAItem, ...]
    evidence: Mapping[str, tuple[Fact, ...]] = field(hash=False)  # item id -> the facts it chains, in hop order
    test_fraction: float = 0.2

    @cached_property
    def _by_id(self) -> dict[str, Entity]:
        return {e.id: e for e in self.entities}

    def entity(self, entity_id: str) -> Entity:
        return self._by_id[entity_id]

    def is_entity(self, key: str) -> bool:
        return key in self._by_id

    def stated(self, fact: Fact) -> str:
        """The fact's object as a passage states it: an entity's name, or the literal."""
        return self._by_id[fact.object].name if fact.object in self._by_id else fact.object

    def search_entities(self, item_id: str) -> tuple[str, ...]:
        """Entities whose passages an item needs (one per hop): what a searcher must look up."""
        return tuple(f.subject for f in self.evidence[item_id])

    def split_of(self, item_id: str) -> str:
        return split_of(self.evidence[item_id][0].subject, self.test_fraction)

    def split_items(self, split: str | None) -> tuple[QAItem, ...]:
        """Items of one split ("train", "test"); None (or "all") gives every item."""
        if split in (None, "all"):
            return self.items
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS} or None, got {split!r}")
        return tuple(it for it in self.items if self.split_of(it.id) == split)

    def write(self, directory: str | Path) -> WorldFiles:
        """Write corpus.jsonl and questions_<split>.parquet (Search-R1 format) under `directory`."""
        directory = Path(directory)
        corpus = write_corpus_jsonl(self.documents, directory / "corpus.jsonl")
        questions = {
            split: write_items_parquet(self.split_items(split), directory / f"questions_{split}.parquet", split=split)
            for split in SPLITS
        }
        return WorldFiles(corpus=corpus, questions=questions)


def generate_world(seed: int = 0, size: str | int | WorldSize = "default", *, test_fraction: float = 0.2) -> World:
    """Build the world for `seed` (same seed and size: identical world, on any machine)."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    dims = resolve_size(size)
    rng = random.Random(seed)
    entities = _make_entities(rng, dims)
    index = {e.id: e for e in entities}
    backrefs = _backrefs(entities)

    documents: list[Document] = []
    for e in entities:
        for text in entity_passages(e, index, backrefs, rng):
            documents.append(Document.make(str(len(documents)), e.name, text))

    items: list[QAItem] = []
    evidence: dict[str, tuple[Fact, ...]] = {}
    for e in entities:
        for q in entity_questions(e, index, rng):
            item_id = f"world{seed}-{e.id}-{q.key}"
            items.append(QAItem(id=item_id, question=q.question, answers=q.answers, source="world", hops=len(q.facts)))
            evidence[item_id] = q.facts
    return World(seed, dims, tuple(entities), tuple(documents), tuple(items), evidence, test_fraction)


def _backrefs(entities: list[Entity]) -> dict[str, dict[str, list[str]]]:
    """object id -> relation -> subject ids pointing at it, in entity order (for passages
    that list, e.g., the people born in a city)."""
    ids = {e.id for e in entities}  # membership only
    refs: dict[str, dict[str, list[str]]] = {}
    for e in entities:
        for relation, value in e.attrs.items():
            if isinstance(value, str) and value in ids:
                refs.setdefault(value, {}).setdefault(relation, []).append(e.id)
    return refs


# --- entities and relations -------------------------------------------------------------

_INDUSTRIES = ("software", "shipbuilding", "textile", "pharmaceutical", "mining", "aviation", "food processing",
               "publishing", "telecommunications", "rail transport", "brewing", "robotics")  # fmt: skip
_OCCUPATIONS = ("physicist", "painter", "composer", "politician", "architect", "chess player", "sculptor",
                "economist", "chemist", "diplomat", "mathematician", "photographer")  # fmt: skip
_BOOK_GENRES = ("historical", "detective", "science fiction", "coming-of-age", "satirical", "fantasy", "war", "family")
_FILM_GENRES = ("drama", "thriller", "comedy", "western", "musical", "science fiction", "crime")
_BOOK_NOUNS = ("Lanterns", "Orchard", "Tide", "Silence", "Harvest", "Winter", "Mirror", "Garden", "Crown", "Ashes",
               "Bridge", "Letters", "Salt", "Bells")  # fmt: skip
_FILM_WORDS = ("Rising", "Nights", "Crossing", "Station", "Requiem", "Horizon", "Descent", "Summer")
# No "University of X": passages would need "the" before it.
_UNIVERSITY_FORMS = ("{} University", "{} State University", "{} Institute of Technology", "{} College")
_COMPANY_SUFFIXES = ("Industries", "Systems", "Labs", "Holdings", "Group", "Works", "Dynamics", "Motors")
_LANGUAGE_SUFFIXES = ("ish", "ese", "ic", "an")
_PRODUCTS = ("engine", "loom", "press", "drive", "lamp")


def _make_entities(rng: random.Random, n: WorldSize) -> list[Entity]:
    """Entities in a fixed order (countries with their cities, rivers, universities, people,
    companies, books, films); each kind's relations point only at kinds made before it."""
    b = _Builder(rng)
    countries, cities, capitals = [], [], []
    for k in range(n.countries):
        member = [b.city(len(cities) + i, f"country-{k:04d}") for i in range(n.cities_per_country)]
        countries.append(b.country(k, member))
        cities += member
        capitals.append(member[0])
    b.rivers(n.rivers, countries, exclude=capitals)
    universities = [b.university(u, cities) for u in range(n.universities)]

    roles = ["founder"] * n.companies + ["writer"] * n.writers + ["director"] * n.directors
    roles += ["other"] * (n.people - len(roles))
    people: dict[str, list[str]] = {"founder": [], "writer": [], "director": [], "other": []}
    for p, role in enumerate(roles):
        people[role].append(b.person(p, role, cities, universities))

    for y, founder in enumerate(people["founder"]):
        b.company(y, founder, cities)
    # every writer (director) gets one book (film), the rest go to random ones
    authors = people["writer"] + [rng.choice(people["writer"]) for _ in range(n.books - n.writers)]
    books = [b.book(i, author, cities) for i, author in enumerate(authors)]
    makers = people["director"] + [rng.choice(people["director"]) for _ in range(n.films - n.directors)]
    for f, director in enumerate(makers):
        b.film(f, director, books, cities)
    return b.out


class _Builder:
    """Makes entities one kind at a time; `by_id` lets later kinds read earlier ones."""

    def __init__(self, rng: random.Random):
        self.rng, self.names = rng, NameGenerator(rng)
        self.out: list[Entity] = []
        self.by_id: dict[str, Entity] = {}

    def _add(self, kind: str, index: int, name: str, aliases: tuple[str, ...], **attrs: Any) -> str:
        entity = Entity(f"{kind}-{index:04d}", kind, name, tuple(dict.fromkeys((name, *aliases))), attrs)
        self.out.append(entity)
        self.by_id[entity.id] = entity
        return entity.id

    def city(self, index: int, country: str) -> str:
        r = self.rng
        return self._add("city", index, self.names.stem(), (), country=country, population=r.randint(12, 2400) * 1000,
                         founded_year=r.randint(700, 1850), river=None)  # fmt: skip

    def country(self, index: int, cities: list[str]) -> str:
        r = self.rng
        language = self.names.stem(4, 8) + r.choice(_LANGUAGE_SUFFIXES)
        return self._add("country", index, self.names.stem(), (), capital=cities[0], cities=tuple(cities),
                         language=language, independence_year=r.randint(1650, 1990))  # fmt: skip

    def rivers(self, count: int, countries: list[str], exclude: list[str]) -> None:
        """Rivers through 1-3 non-capital cities of one country, at most one river per city,
        so a river passage never names a capital (that would shortcut two-hop questions)."""
        free = {c: [x for x in self.by_id[c].attrs["cities"] if x not in exclude] for c in countries}
        for index in range(count):
            options = [c for c in countries if free[c]]
            if not options:
                return  # more rivers asked for than cities can carry: the world has fewer
            country = self.rng.choice(options)
            through = self.rng.sample(free[country], min(len(free[country]), self.rng.randint(1, 3)))
            free[country] = [x for x in free[country] if x not in through]
            stem = self.names.stem()
            river = self._add("river", index, f"{stem} River", (stem,), country=country, cities=tuple(through),
                              length_km=self.rng.randint(40, 1900))  # fmt: skip
            for city in through:
                self.by_id[city].attrs["river"] = river

    def university(self, index: int, cities: list[str]) -> str:
        r, stem = self.rng, self.names.stem()
        return self._add("university", index, r.choice(_UNIVERSITY_FORMS).format(stem), (stem,), city=r.choice(cities),
                         founded_year=r.randint(1150, 1900), students=r.randint(8, 450) * 100)  # fmt: skip

    def person(self, index: int, role: str, cities: list[str], universities: list[str]) -> str:
        r = self.rng
        first, surname = self.names.person()
        birth, born_in = r.randint(1820, 1985), r.choice(cities)
        # the university existed when they enrolled
        open_unis = [u for u in universities if self.by_id[u].attrs["founded_year"] <= birth + 18] or universities
        occupation = {"founder": "entrepreneur", "writer": "novelist", "director": "film director"}.get(role)
        return self._add(
            "person", index, f"{first} {surname}", (surname,), first=first, surname=surname, role=role,
            pronoun=r.choice(("he", "she")), birth_year=birth, born_in=born_in, studied_at=r.choice(open_unis),
            graduation_year=birth + r.randint(21, 26), occupation=occupation or r.choice(_OCCUPATIONS),
            work_city=r.choice([c for c in cities if c != born_in]) if role == "other" else None,
        )  # fmt: skip

    def company(self, index: int, founder: str, cities: list[str]) -> str:
        r, stem, person = self.rng, self.names.stem(), self.by_id[founder].attrs
        # Headquarters away from the founder's birthplace, so a company passage never names
        # the answer to "In which city was the founder of X born?".
        hq = r.choice([c for c in cities if c != person["born_in"]])
        product = f"{self.names.stem()} {r.choice(_PRODUCTS)}"
        return self._add(
            "company", index, f"{stem} {r.choice(_COMPANY_SUFFIXES)}", (stem,), founder=founder, headquartered_in=hq,
            founded_year=min(2020, person["birth_year"] + r.randint(22, 55)), industry=r.choice(_INDUSTRIES),
            employees=r.randint(2, 900) * 50, product=product,
        )  # fmt: skip

    def book(self, index: int, author: str, cities: list[str]) -> str:
        r, stem, person = self.rng, self.names.stem(), self.by_id[author].attrs
        noun = r.choice(_BOOK_NOUNS)
        title = f"The {noun} of {stem}" if r.random() < 0.5 else f"The {stem} {noun}"
        protagonist = f"{self.names.person()[0]} {self.names.stem()}"
        # set away from the author's birthplace, for the same reason as company headquarters
        setting = r.choice([c for c in cities if c != person["born_in"]])
        return self._add(
            "book", index, title, (title.removeprefix("The "),), author=author, genre=r.choice(_BOOK_GENRES),
            year=min(2022, person["birth_year"] + r.randint(24, 70)), protagonist=protagonist, setting=setting,
        )  # fmt: skip

    def film(self, index: int, director: str, books: list[str], cities: list[str]) -> str:
        r, stem = self.rng, self.names.stem()
        source = r.choice(books) if r.random() < 0.5 else None
        year = self.by_id[director].attrs["birth_year"] + r.randint(25, 60)
        if source is not None:  # released after its novel
            year = max(year, self.by_id[source].attrs["year"] + r.randint(1, 15))
        title = r.choice((f"{stem} {r.choice(_FILM_WORDS)}", f"The Last {stem}", stem))
        return self._add(
            "film", index, title, (title.removeprefix("The "),), director=director, year=min(2024, year),
            genre=r.choice(_FILM_GENRES), based_on=source, shot_in=r.choice(cities), runtime=r.randint(80, 170),
        )  # fmt: skip
