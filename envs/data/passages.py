"""Wikipedia-style passages about the generated world's entities (envs/data/world.py).

Each entity gets one or two short passages, titled with its name, each stating two to five
facts in plain sentences ("Ilvara Quensett (born 1887) was a chemist born in Tarsk. She
studied at Velqorin University and graduated in 1910."). Passages about other entities
mention it too (a city lists people born there, a university its alumni), which makes
retrieval realistic: a search for a name returns the entity's own passages and others.

One rule keeps two-hop questions two-hop: a passage never states the second hop's answer
for its own entity. Person passages never name a country, company passages name only the
headquarters city (never the founder's birthplace, world.py picks it elsewhere), river
passages never name a capital, film passages never name the source novel's author. The
tests check this for every two-hop question.
"""

from __future__ import annotations

import random
from typing import Any, Callable, Mapping, Sequence

Index = Mapping[str, Any]  # entity id -> Entity
Backrefs = Mapping[str, Mapping[str, Sequence[str]]]  # object id -> relation -> subject ids


def entity_passages(entity: Any, index: Index, backrefs: Backrefs, rng: random.Random) -> list[str]:
    """The passages about `entity`, in a fixed order (template choices come from `rng`)."""
    return _WRITERS[entity.kind](entity, index, backrefs.get(entity.id, {}), rng)


def join_names(names: Sequence[str]) -> str:
    """'A', 'A and B', 'A, B and C'."""
    names = list(names)
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _a(phrase: str) -> str:
    """'a chemist', 'an economist'."""
    return ("an " if phrase[:1].lower() in "aeiou" else "a ") + phrase


def _person(e: Any, ix: Index, refs: Mapping[str, Sequence[str]], rng: random.Random) -> list[str]:
    a = e.attrs
    he, his = a["pronoun"].capitalize(), {"he": "his", "she": "her"}[a["pronoun"]]
    verb = "was" if a["birth_year"] < 1935 else "is"  # the long dead get the past tense
    city, uni = ix[a["born_in"]].name, ix[a["studied_at"]].name
    early = rng.choice((
        f"{e.name} (born {a['birth_year']}) {verb} {_a(a['occupation'])} born in {city}. "
        f"{he} studied at {uni} and graduated in {a['graduation_year']}.",
        f"{e.name} {verb} {_a(a['occupation'])}, born in {city} in {a['birth_year']}. "
        f"{he} attended {uni}, where {a['pronoun']} graduated in {a['graduation_year']}.",
        f"Born in {a['birth_year']} in {city}, {e.name} {verb} {_a(a['occupation'])}. "
        f"{he} graduated from {uni} in {a['graduation_year']}.",
    ))  # fmt: skip
    surname = a["surname"]
    if a["role"] == "founder":
        company = ix[refs["founder"][0]]
        c = company.attrs
        career = (
            f"In {c['founded_year']}, {surname} founded {company.name}, {_a(c['industry'])} company with its "
            f"headquarters in {ix[c['headquartered_in']].name}. {he} led it for {rng.randint(4, 40)} years."
        )
    elif a["role"] == "writer":
        books = [ix[b] for b in refs["author"]]
        works = join_names([f"{b.name} ({b.attrs['year']})" for b in books])
        novels = "novels" if len(books) > 1 else "novel"
        career = f"{surname} wrote the {novels} {works}. {he} is known for {books[0].attrs['genre']} fiction."
    elif a["role"] == "director":
        films = [ix[f] for f in refs["director"]]
        works = join_names([f"{f.name} ({f.attrs['year']})" for f in films])
        career = f"As a director, {surname} made {works}. {he} also wrote screenplays for the stage."
    else:
        career = (
            f"{surname} worked as {_a(a['occupation'])} in {ix[a['work_city']].name} for most of {his} career. "
            f"{he} received a national award for {his} work in {min(2024, a['graduation_year'] + rng.randint(8, 35))}."
        )
    return [early, career]


def _city(e: Any, ix: Index, refs: Mapping[str, Sequence[str]], rng: random.Random) -> list[str]:
    a = e.attrs
    country = ix[a["country"]]
    role = f"the capital of {country.name}" if country.attrs["capital"] == e.id else f"a city in {country.name}"
    first = f"{e.name} is {role}, with a population of {a['population']:,}. It was founded in {a['founded_year']}."
    if a["river"] is not None:
        first += f" The {ix[a['river']].name} flows through {e.name}."
    notes = []
    if refs.get("born_in"):
        notes.append(f"People born in {e.name} include {join_names([ix[p].name for p in refs['born_in'][:4]])}.")
    universities = [ix[u].name for u in refs.get("city", ()) if ix[u].kind == "university"]
    if universities:
        notes.append(f"{e.name} is home to {join_names(universities)}.")
    if refs.get("headquartered_in"):
        companies = [ix[c].name for c in refs["headquartered_in"][:3]]
        have = "has its" if len(companies) == 1 else "have their"
        notes.append(f"{join_names(companies)} {have} headquarters in {e.name}.")
    return [first] + ([" ".join(notes)] if notes else [])


def _country(e: Any, ix: Index, refs: Mapping[str, Sequence[str]], rng: random.Random) -> list[str]:
    a = e.attrs
    first = (
        f"{e.name} is a country whose capital is {ix[a['capital']].name}. Its official language is "
        f"{a['language']}, and it became independent in {a['independence_year']}."
    )
    others = [ix[c].name for c in a["cities"] if c != a["capital"]][:4]
    second = f"Other cities of {e.name} include {join_names(others)}."
    rivers = [ix[r].name for r in refs.get("country", ()) if ix[r].kind == "river"]
    if rivers:
        second += f" The {join_names(rivers)} {'flows' if len(rivers) == 1 else 'flow'} through the country."
    return [first, second]


def _river(e: Any, ix: Index, refs: Mapping[str, Sequence[str]], rng: random.Random) -> list[str]:
    a = e.attrs
    cities = join_names([ix[c].name for c in a["cities"]])
    return [f"The {e.name} is a river in {ix[a['country']].name}, {a['length_km']} km long. It flows through {cities}."]


def _university(e: Any, ix: Index, refs: Mapping[str, Sequence[str]], rng: random.Random) -> list[str]:
    a = e.attrs
    out = [
        f"{e.name} is a university in {ix[a['city']].name}, founded in {a['founded_year']}. "
        f"It has about {a['students']:,} students."
    ]
    if refs.get("studied_at"):
        out.append(f"Alumni of {e.name} include {join_names([ix[p].name for p in refs['studied_at'][:4]])}.")
    return out


def _company(e: Any, ix: Index, refs: Mapping[str, Sequence[str]], rng: random.Random) -> list[str]:
    a = e.attrs
    return [
        f"{e.name} is {_a(a['industry'])} company headquartered in {ix[a['headquartered_in']].name}. "
        f"It was founded in {a['founded_year']} by {ix[a['founder']].name}.",
        f"{e.name} employs about {a['employees']:,} people. Its best-known product is the {a['product']}.",
    ]


def _book(e: Any, ix: Index, refs: Mapping[str, Sequence[str]], rng: random.Random) -> list[str]:
    a = e.attrs
    second = f"{e.name} is set in {ix[a['setting']].name} and follows {a['protagonist']}."
    for f in refs.get("based_on", ()):
        second += f" It was adapted into the film {ix[f].name} ({ix[f].attrs['year']})."
    return [f"{e.name} is {_a(a['genre'])} novel by {ix[a['author']].name}, first published in {a['year']}.", second]


def _film(e: Any, ix: Index, refs: Mapping[str, Sequence[str]], rng: random.Random) -> list[str]:
    a = e.attrs
    first = f"{e.name} is a {a['year']} {a['genre']} film directed by {ix[a['director']].name}."
    if a["based_on"] is not None:
        first += f" It is based on the novel {ix[a['based_on']].name}."
    return [first, f"{e.name} was shot in {ix[a['shot_in']].name} and runs {a['runtime']} minutes."]


_WRITERS: dict[str, Callable[..., list[str]]] = {
    "person": _person, "city": _city, "country": _country, "river": _river,
    "university": _university, "company": _company, "book": _book, "film": _film,
}  # fmt: skip
