"""Result pages as text: HTML stripped to its readable text, capped in size.

    html_to_text("<html><script>x()</script><p>Paris is the capital.</p></html>")  # 'Paris is the capital.'
    cap_text("a long text ...", 1500)                                              # at most 1500 characters

The stripper is the standard library's html.parser, not BeautifulSoup or trafilatura: the
job is small (drop markup, scripts, styles and page chrome, keep the words), html.parser is
lenient with broken markup, and it adds no dependency to the pinned lock file. It drops
the contents of <script>, <style>, <noscript>, <template>, <svg>, <head> (the title comes
from the search result) and of the usual page chrome <nav>, <header>, <footer>, <aside>,
<form>; a main-content extractor would do better on real sites, at the price of a dependency.
The text comes out on one line (observations show one result per line).
"""

from __future__ import annotations

from html.parser import HTMLParser

# Elements whose contents are never page text.
SKIPPED = frozenset({"script", "style", "noscript", "template", "svg", "head", "nav", "header", "footer", "aside", "form"})
# Elements that never have an end tag (so they never open a skipped region).
VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"})
# Elements that separate words even with no whitespace around them (<p>a</p><p>b</p>).
BLOCK = frozenset({"p", "div", "br", "li", "ul", "ol", "tr", "td", "th", "table", "section", "article", "main",
                   "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre", "dd", "dt", "dl", "hr", "figcaption"})


class _TextExtractor(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)  # &amp; -> &
        self.parts: list[str] = []
        self.skip_depth = 0

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag in SKIPPED and tag not in VOID:
            self.skip_depth += 1
        elif tag in BLOCK:
            self.parts.append(" ")

    def handle_startendtag(self, tag: str, attrs) -> None:  # <br/>: no depth change
        if tag in BLOCK:
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in SKIPPED:
            self.skip_depth = max(0, self.skip_depth - 1)
        elif tag in BLOCK:
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self.skip_depth:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    """The readable text of an HTML document, whitespace collapsed to single spaces."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    return " ".join("".join(parser.parts).split())


def page_text(content_type: str, body: str) -> str | None:
    """Text of a fetched body by its content type: HTML stripped, plain text kept; None for
    anything else (PDF, images, JSON), which the caller replaces by the snippet."""
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind in ("text/html", "application/xhtml+xml", ""):
        return html_to_text(body)
    if kind == "text/plain":
        return " ".join(body.split())
    return None


def cap_text(text: str, max_chars: int, ellipsis: str = " ...") -> str:
    """`text` if it fits in `max_chars`, else cut at the last space that leaves room for the
    ellipsis (mid-word only when the text has no space late enough), ellipsis included."""
    if max_chars <= len(ellipsis):
        raise ValueError(f"max_chars={max_chars}: must exceed the ellipsis length {len(ellipsis)}")
    if len(text) <= max_chars:
        return text
    room = max_chars - len(ellipsis)
    cut = text.rfind(" ", 0, room + 1)
    if cut < room // 2:  # one giant word: cut inside it rather than lose half the budget
        cut = room
    return text[:cut].rstrip() + ellipsis
