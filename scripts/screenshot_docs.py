"""Builds the docs site, serves it on 127.0.0.1 and looks at it in headless Chromium, as a reader would.

For each page (by default the home page and the functional API page) it saves a screenshot and fails if the page,
as the browser shows it, contains a raw Sphinx role (``:func:`...```) or an image that did not load, or if the
browser asked the server for a file the site does not have. ``scripts/check_site.py`` (run by the tests and CI)
checks the HTML files; this checks what a browser makes of them, theme scripts and styles included.

    apt-get install -y chromium          # Debian's package; any Chromium or Chrome on PATH works
    python scripts/screenshot_docs.py                      # screenshots in ./docs-screenshots/
    python scripts/screenshot_docs.py --site /tmp/site --out /tmp/shots --page results/

Not part of CI (installing Chromium takes about two minutes); run it after changing the theme, the mkdocs
configuration or how the API pages are rendered, and look at the screenshots.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from html.parser import HTMLParser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PAGES = ("", "api/functional/")
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# Injected into every HTML page the server sends (the files on disk are untouched): once the page has loaded, list
# the images the browser could not decode in an element that --dump-dom then shows.
_IMAGE_PROBE = b"""<script>
window.addEventListener("load", () => setTimeout(() => {
  const broken = [...document.images].filter((img) => !img.complete || img.naturalWidth === 0).map((img) => img.src);
  const report = document.createElement("pre");
  report.id = "screenshot-docs-broken-images";
  report.hidden = true;  // in the DOM dump, not in the screenshot
  report.textContent = JSON.stringify(broken);
  document.body.appendChild(report);
}, 500));
</script>"""


def _check_site():
    spec = importlib.util.spec_from_file_location("check_site", ROOT / "scripts" / "check_site.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Handler(http.server.SimpleHTTPRequestHandler):
    missing: list[str]  # set per server: paths the browser asked for that the site lacks

    def send_error(self, code, message=None, explain=None):
        if code == 404:
            self.missing.append(self.path)
        super().send_error(code, message, explain)

    def end_headers(self):
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def copyfile(self, source, outputfile):
        if self.path.endswith((".html", "/")):
            html = source.read()
            outputfile.write(html.replace(b"</body>", _IMAGE_PROBE + b"</body>"))
        else:
            super().copyfile(source, outputfile)

    def send_header(self, keyword, value):
        if keyword == "Content-Length" and self.path.endswith((".html", "/")):
            value = str(int(value) + len(_IMAGE_PROBE))
        super().send_header(keyword, value)

    def log_message(self, format, *args):  # quiet: the report says what matters
        pass


class _Text(HTMLParser):
    """The visible text of a DOM dump, and the broken-image report."""

    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.report = ""
        self._skip = 0
        self._in_report = False

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self._skip += 1
        self._in_report = dict(attrs).get("id") == "screenshot-docs-broken-images"

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self._skip -= 1
        self._in_report = False

    def handle_data(self, data):
        if self._in_report:
            self.report += data
        elif not self._skip:
            self.text.append(data)


def _browser() -> str:
    for name in BROWSERS:
        if path := shutil.which(name):
            return path
    sys.exit("No Chromium found: install Debian's package (apt-get install -y chromium) or put Chrome on PATH.")


def _chromium(browser: str, *args: str) -> str:
    command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if result.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    return result.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--site", type=Path, help="a built site (default: build one with mkdocs build --strict)")
    parser.add_argument("--out", type=Path, default=Path("docs-screenshots"), help="where the screenshots go")
    parser.add_argument("--page", action="append", help="a page path in the site, e.g. api/linen/ (repeatable)")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=1600)
    args = parser.parse_args(argv)
    browser = _browser()
    role = _check_site().SPHINX_ROLE
    raw_role_text = re.compile(role.pattern.replace("(?:`|<code>)", ""))

    with tempfile.TemporaryDirectory() as tmp:
        site = args.site
        if site is None:
            site = Path(tmp) / "site"
            env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
            build = [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(site)]
            subprocess.run(build, cwd=ROOT, check=True, env=env)
        failures = [f"site: {line}" for line in _check_site().problems(site)]

        handler = functools.partial(type("Handler", (_Handler,), {"missing": []}), directory=str(site))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{server.server_address[1]}/"
        args.out.mkdir(parents=True, exist_ok=True)
        try:
            for page in args.page or DEFAULT_PAGES:
                url = base + page
                name = page.strip("/").replace("/", "_") or "home"
                screenshot = args.out / f"{name}.png"
                size = f"--window-size={args.width},{args.height}"
                _chromium(browser, size, f"--screenshot={screenshot.resolve()}", "--virtual-time-budget=5000", url)
                dom = _Text()
                dom.feed(_chromium(browser, size, "--virtual-time-budget=5000", "--dump-dom", url))
                text = " ".join(dom.text)
                if not dom.report:
                    failures.append(f"{url}: the image check did not run (the page did not finish loading)")
                elif dom.report.strip() != "[]":
                    failures.append(f"{url}: images that did not load: {dom.report.strip()}")
                failures += [f"{url}: raw Sphinx role {m.group()!r}" for m in raw_role_text.finditer(text)]
                print(f"{screenshot}  ({len(text.split())} words of text)")
        finally:
            server.shutdown()
        failures += [f"the browser asked for missing {path}" for path in handler.func.missing]

    for failure in failures:
        print("FAIL", failure)
    print(f"{len(failures)} problem(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
