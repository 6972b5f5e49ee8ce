"""Every ```python block of README.md and docs/**/*.md runs, and the built site has no raw markup or broken images.

A page is one test: its Python blocks run in order in one namespace, in a temporary working directory, as a reader
would paste them. An HTML comment on the line before a block (blank lines allowed) changes how it is run:

- ``<!-- docs-test: slow -->``: the block takes long; the page's test is marked ``slow`` (``pytest -m slow``).
- ``<!-- docs-test: requires haiku -->``: the block needs an optional package that the test environment may
  lack; it runs where the package imports and is left out (with a note on the test) where it does not.
- ``<!-- docs-test: skip: why -->``: the block is not meant to run (an illustrative fragment); the reason is
  required. Keep these rare: a block a reader cannot run is a block that can silently go wrong.

Tracebacks point at the Markdown file's own line numbers.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import textwrap
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["README.md", *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").rglob("*.md"))]

_FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w+-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.M | re.S)
_MARKER = re.compile(r"<!--\s*docs-test:\s*(?P<directive>slow|skip|requires)\b:?\s*(?P<argument>.*?)\s*-->\s*\Z", re.S)


@dataclass(frozen=True)
class Block:
    """One ```python block: its code, its first line in the page, and its marker (if any)."""

    code: str
    line: int
    directive: str = ""
    argument: str = ""


def python_blocks(text: str) -> list[Block]:
    """The page's ```python blocks, in order, each with the docs-test marker written just before it."""
    blocks = []
    for fence in _FENCE.finditer(text):
        if fence["lang"] not in ("python", "py"):
            continue
        before = text[: fence.start()].rstrip()
        comment_start = before.rfind("<!--")
        marker = _MARKER.search(before[comment_start:]) if comment_start >= 0 else None
        line = text.count("\n", 0, fence.start("body")) + 1
        code = textwrap.dedent(fence["body"])
        blocks.append(Block(code, line, *(marker.group("directive", "argument") if marker else ("", ""))))
    return blocks


def _page_param(page: str):
    blocks = python_blocks((ROOT / page).read_text(encoding="utf-8"))
    slow = any(block.directive == "slow" for block in blocks)
    return pytest.param(page, marks=[pytest.mark.slow] if slow else [], id=page)


def _run_page(page: str) -> dict:
    """Runs the page's blocks in order in one namespace; returns the namespace."""
    namespace: dict = {"__name__": "__docs__"}
    for block in python_blocks((ROOT / page).read_text(encoding="utf-8")):
        if block.directive == "skip":
            assert block.argument, f"{page}:{block.line}: `docs-test: skip` needs a reason"
            continue
        if block.directive == "requires":
            missing = [name for name in block.argument.replace(",", " ").split() if not importlib.util.find_spec(name)]
            if missing:
                warnings.warn(f"{page}:{block.line} not run: {', '.join(missing)} not installed", stacklevel=1)
                continue
        code = "\n" * (block.line - 1) + block.code  # tracebacks name the Markdown file's own line numbers
        exec(compile(code, str(ROOT / page), "exec"), namespace)
    return namespace


@pytest.mark.parametrize("page", [_page_param(page) for page in PAGES])
def test_page_code_runs(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a block that writes a file writes it here
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace = _run_page(page)
    if page == "README.md":  # the quickstart's last claim: one compiled program for all seven rates
        assert namespace["ys"].shape == (7, 4, 8)


def test_every_page_with_code_is_collected():
    with_code = [page for page in PAGES if python_blocks((ROOT / page).read_text(encoding="utf-8"))]
    assert "README.md" in with_code and "docs/migration.md" in with_code, with_code


def test_markers_are_read():
    text = textwrap.dedent(
        """\
        ```python
        a = 1
        ```
        <!-- docs-test: skip: a fragment -->

        ```python
        b = undefined
        ```
        - a list item:

          <!-- docs-test: requires haiku -->
          ```python
          import haiku
          ```
        ```bash
        echo not python
        ```
        """
    )
    blocks = python_blocks(text)
    assert [(b.directive, b.argument, b.line) for b in blocks] == [
        ("", "", 2),
        ("skip", "a fragment", 7),
        ("requires", "haiku", 13),
    ]
    assert blocks[2].code == "import haiku\n"


# --- the built site --------------------------------------------------------------------------------------------------


def _check_site():
    spec = importlib.util.spec_from_file_location("check_site", ROOT / "scripts" / "check_site.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_site_checker_finds_raw_roles_and_broken_references(tmp_path):
    (tmp_path / "index.html").write_text('<a href="api/">api</a><img src="figure.png"><img src="data:image/png;x">')
    (tmp_path / "figure.png").write_bytes(b"")
    (tmp_path / "api").mkdir()
    (tmp_path / "api" / "index.html").write_text(
        'See :func:<code>dropout</code>. <code>:func:</code> is fine in code. <img src="../missing.png">'
        '<a href="../nowhere/#x">x</a> <a href="https://example.org/">ok</a> <a href="#top">ok</a>'
        '<img src="https://example.org/a.png">'
    )
    found = _check_site().problems(tmp_path)
    assert len(found) == 4, found
    assert "raw Sphinx role" in found[0] and "dropout" in found[0]
    assert "missing.png" in found[1] and "nowhere/index.html" in found[2] and "from the network" in found[3]


@pytest.mark.slow  # .ci/run's docs step builds the site and runs the same check (scripts/check_site.py)
def test_site_builds_strict_with_no_raw_markup_or_broken_images(tmp_path):
    for module in ("mkdocs", "mkdocstrings_handlers.python", "mkdocs_jupyter", "material"):
        pytest.importorskip(module, reason='the docs extra: pip install -e ".[docs]"')
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    build = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)]
    result = subprocess.run(build, cwd=ROOT, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert _check_site().problems(site) == []
    # The figures and the notebooks are in the site, with the notebooks' own output images.
    assert len(list((site / "examples" / "results").glob("*.png"))) >= 10
    results_page = (site / "results" / "index.html").read_text(encoding="utf-8")
    assert results_page.count("<img") >= 10
    notebook = (site / "notebooks" / "uncertainty" / "index.html").read_text(encoding="utf-8")
    assert "data:image/png;base64," in notebook
    # The API pages show no private base classes, and their introductions (the page's own text, then the module
    # docstring, up to the first documented object) say nothing twice.
    for page in sorted((site / "api").glob("*/index.html")):
        html = page.read_text(encoding="utf-8")
        private = [name for name in ("Bases:", "_Functional", "_Stochastic", "_layers.") if name in html]
        assert not private, (page, private)
        start = html.index("<h1")
        end = html.find('class="doc doc-heading"', start)
        intro = re.findall(r"<p>(.*?)</p>", html[start : end if end >= 0 else None], flags=re.S)
        sentences = [s for p in intro for s in re.sub(r"<[^>]+>|\s+", " ", p).split(". ") if len(s) > 40]
        repeated = sorted(s for s in set(sentences) if sentences.count(s) > 1)
        assert not repeated, (page, repeated)
