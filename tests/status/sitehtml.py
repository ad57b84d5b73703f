"""Reading the generated status site back with html.parser: table rows by their cells, and every link."""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit


@dataclass
class Row:
    kind: str  # "variant", "model", "skip", "gate"
    run: str  # the enclosing tbody's data-run ('' outside one)
    variant: str
    cells: dict[str, str] = field(default_factory=dict)  # td class c-* (or data-label) -> text
    titles: dict[str, str] = field(default_factory=dict)  # td class -> its title attribute
    links: dict[str, str] = field(default_factory=dict)  # td class -> href of its link


class SiteParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.rows: list[Row] = []
        self.refs: list[str] = []  # every href and src
        self.text: list[str] = []
        self._run = ""
        self._row: Row | None = None
        self._cell: str | None = None
        self._buf: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        for key in ("href", "src"):
            if key in a:
                self.refs.append(a[key])
        classes = a.get("class", "").split()
        if tag == "tbody":
            self._run = a.get("data-run", "")
        elif tag == "tr" and classes and classes[0] in ("variant", "model", "skip", "gate"):
            self._row = Row(classes[0], self._run, a.get("data-variant", ""))
        elif tag in ("td", "th") and self._row is not None:
            self._cell = next((c for c in classes if c.startswith("c-")), a.get("data-label") or tag)
            self._buf = []
            if "title" in a:
                self._row.titles[self._cell] = a["title"]
        elif tag == "a" and self._row is not None and self._cell is not None:
            self._row.links[self._cell] = a.get("href", "")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row.cells[self._cell] = " ".join("".join(self._buf).split())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None
        elif tag == "tbody":
            self._run = ""

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._cell is not None:
            self._buf.append(data)


def parse(html: str) -> SiteParser:
    p = SiteParser()
    p.feed(html)
    p.close()
    return p


def variant_rows(parsed: SiteParser, run: str | None = None) -> dict[str, Row]:
    return {r.variant: r for r in parsed.rows if r.kind == "variant" and (run is None or r.run == run)}


def internal_targets(page: Path, refs: list[str]) -> list[Path]:
    """The files that the page's relative links name (external http(s) links left out)."""
    out = []
    for ref in refs:
        parts = urlsplit(ref)
        if parts.scheme or parts.netloc:
            continue
        out.append((page.parent / unquote(parts.path)).resolve())
    return out
