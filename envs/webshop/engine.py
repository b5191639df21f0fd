"""WebShop's search engine: BM25 over the catalog, built once and shared by every env.

    engine = WebShopEngine(catalog)             # indexes every product (BM25, bm25s)
    engine.search("red running shoes size 9")   # best products first, at most 50

Each product is indexed by the text WebShop's Lucene index holds (search_engine/
convert_product_file_format.py): its title, description, first bullet point and option
values ("color: black, white, and size: 7, 8"). Departure: the reference serves a pyserini
(Java) index built offline; here bm25s builds the index in process (about a second per
10,000 products), so no Java and no index files. The engine is read-only after
construction, so one instance serves all envs of a job.
"""

from __future__ import annotations

from envs.retrieval.bm25 import BM25Index
from envs.retrieval.corpus import Document

from .catalog import Catalog, Product

SEARCH_RETURN_N = 50  # WebShop returns the top 50 products of a search


def product_document(product: Product) -> Document:
    options = ", and ".join(f"{group}: {', '.join(values)}" for group, values in product.options.items())
    parts = [product.description, product.bullet_points[0] if product.bullet_points else "", options]
    return Document.make(product.asin, product.title, " ".join(p for p in parts if p))


class WebShopEngine:
    """The catalog plus its search index."""

    def __init__(self, catalog: Catalog, *, search_return_n: int = SEARCH_RETURN_N):
        if search_return_n < 1:
            raise ValueError(f"search_return_n={search_return_n}: must be at least 1")
        self.catalog = catalog
        self.search_return_n = search_return_n
        self.index = BM25Index.build([product_document(p) for p in catalog.products])

    def search(self, query: str) -> list[Product]:
        """The best products for `query`, best first (none when no word matches)."""
        if not query.strip():
            return []
        hits = self.index.search([query.lower()], self.search_return_n)[0]
        return [self.catalog.product(h.document.id) for h in hits]
