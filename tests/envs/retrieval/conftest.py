"""A small corpus of made-up entities, one distinct fact each, written as a real
Search-R1 JSONL file."""

import pytest

from envs.retrieval.corpus import Document, write_corpus_jsonl

FACTS = {
    "Orla Fenwick": "Orla Fenwick is a violin maker who builds string instruments in her workshop in Cremona.",
    "Mount Tesskar": "Mount Tesskar is an active volcano that last erupted in 1998, covering nearby villages in ash.",
    "Brindle Bakery": "Brindle Bakery sells sourdough bread and croissants baked fresh every morning.",
    "Hadrik Solm": "Hadrik Solm won the national chess championship three times with aggressive openings.",
    "Starship Calyx": "The Starship Calyx carried twelve astronauts into orbit around Mars in 2041.",
    "Lake Verrin": "Lake Verrin is a freshwater lake where anglers catch trout and pike.",
    "Pellam Institute": "The Pellam Institute trains nurses and doctors in emergency medicine.",
    "Quorra Dance Company": "The Quorra Dance Company performs ballet and contemporary dance on tour across Europe.",
    "Juniper Rail": "Juniper Rail operates high-speed trains between the coastal cities.",
    "Marlo Vex": "Marlo Vex is a novelist whose mystery books feature a detective solving murders.",
    "Ostrel Vineyard": "Ostrel Vineyard grows grapes and produces red wine aged in oak barrels.",
    "Tarnwick Observatory": "Tarnwick Observatory uses a large telescope to study distant galaxies and stars.",
    "Selka Textile Mill": "Selka Textile Mill weaves cotton into fabric for clothing manufacturers.",
    "Imra Voss": "Dr. Imra Voss is a cardiologist who performs heart surgery at the city hospital.",
    "Falkreth Castle": "Falkreth Castle is a medieval fortress with stone walls and a moat, built in 1240.",
    "Gilder Bank": "Gilder Bank lends money to small businesses and offers savings accounts.",
    "Wrenfield Zoo": "Wrenfield Zoo houses lions, elephants and giraffes in large open enclosures.",
    "Copperline Robotics": "Copperline Robotics builds industrial robot arms for car factories.",
    "Ysolde Marr": "Ysolde Marr is a jazz pianist who records albums with her trio.",
    "Harrowgate Library": "Harrowgate Library lends books and hosts reading clubs for children.",
    "Tolvin Desert": "The Tolvin Desert receives almost no rain and its sand dunes reach 300 metres.",
    "Pemberly FC": "Pemberly FC is a football club that won the league cup in 2019.",
    "Ashcombe Dairy": "Ashcombe Dairy makes cheese and butter from the milk of its cows.",
    "Nerro Glacier": "The Nerro Glacier is a slow river of ice that is melting as temperatures warm.",
    "Kestrel Airlines": "Kestrel Airlines flies passenger jets between the capital and island resorts.",
    "Vantor Pharmaceuticals": "Vantor Pharmaceuticals develops vaccines against influenza.",
    "Bellweather Farm": "Bellweather Farm grows wheat and barley on rolling hills.",
    "Corvin Bridge": "The Corvin Bridge is a suspension bridge spanning the harbour, opened in 1932.",
    "Lumen Theatre": "The Lumen Theatre stages plays by Shakespeare every summer.",
    "Saffron Kitchen": "Saffron Kitchen is a restaurant serving spicy Indian curries.",
}


def make_documents() -> list[Document]:
    return [Document.make(f"doc{i}", title, text) for i, (title, text) in enumerate(FACTS.items())]


@pytest.fixture
def corpus_path(tmp_path):
    """A fresh corpus file per test (its index cache goes beside it, in tmp_path)."""
    return write_corpus_jsonl(make_documents(), tmp_path / "corpus.jsonl")


@pytest.fixture(scope="module")
def module_corpus_path(tmp_path_factory):
    """One corpus file shared by a module's tests (for indexes that are slow to build)."""
    return write_corpus_jsonl(make_documents(), tmp_path_factory.mktemp("corpus") / "corpus.jsonl")
