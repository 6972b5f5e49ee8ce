"""Checks a built docs site: no raw Sphinx roles in the text, and every local image, link, stylesheet and script
resolves to a file of the site.

``mkdocs build --strict`` checks the links written in Markdown; this checks the HTML that comes out, which also
covers what mkdocstrings renders from docstrings, the notebooks' pages and the theme. Used by ``tests/test_docs.py``,
by ``.ci/run`` on the site it builds and by ``scripts/screenshot_docs.py``::

    mkdocs build --strict --site-dir /tmp/site && python scripts/check_site.py /tmp/site
"""

from __future__ import annotations

import re
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

# A role that reached the page unconverted: ":func:`name`" renders as ":func:<code>name</code>".
SPHINX_ROLE = re.compile(r":(?:func|class|meth|mod|attr|obj|exc|data|ref|py:\w+):(?:`|<code>)")
# Where a page points at another file: (tag, attribute).
REFERENCES = {("img", "src"), ("a", "href"), ("link", "href"), ("script", "src"), ("source", "src")}


class _References(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, str]] = []  # (tag, url)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if (tag, name) in REFERENCES and value:
                self.found.append((tag, value))


def _target(site: Path, page: Path, url: str) -> Path | None:
    """The file of the site a local URL points at, or None for external, data and in-page URLs."""
    parts = urlsplit(url)
    if parts.scheme or parts.netloc or not parts.path:  # http(s):, data:, mailto:, //host, "#anchor", "?query"
        return None
    path = unquote(parts.path)
    target = (site / path.lstrip("/")) if path.startswith("/") else (page.parent / path)
    return target / "index.html" if path.endswith("/") or target.is_dir() else target


def problems(site_dir: str | Path) -> list[str]:
    """Everything wrong with the built site at ``site_dir``, one line each (empty when all is well)."""
    site = Path(site_dir).resolve()
    pages = sorted(site.rglob("*.html"))
    if not (site / "index.html").is_file():
        return [f"{site}: no index.html (not a built site)"]
    found = []
    for page in pages:
        name = page.relative_to(site).as_posix()
        html = page.read_text(encoding="utf-8")
        for match in SPHINX_ROLE.finditer(html):
            found.append(f"{name}: raw Sphinx role {html[match.start() : match.end() + 40]!r}")
        parser = _References()
        parser.feed(html)
        for tag, url in parser.found:
            if tag in ("img", "source") and urlsplit(url).scheme in ("http", "https"):
                found.append(f"{name}: <{tag}> loads {url} from the network (the site must work offline)")
                continue
            target = _target(site, page, url)
            if target is None:
                continue
            if not target.resolve().is_relative_to(site):
                found.append(f"{name}: <{tag}> {url} points outside the site")
            elif not target.is_file():
                found.append(f"{name}: broken <{tag}> {url} (no {target.relative_to(site).as_posix()})")
    return found


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__)
        return 2
    found = problems(argv[0])
    for line in found:
        print(line)
    pages = len(list(Path(argv[0]).rglob("*.html")))
    print(f"{pages} pages checked: {len(found)} problem(s)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
