"""mkdocs hook: publish the committed figures and notebooks, which live outside ``docs/``, in the site.

``examples/results/*.png`` (the figures the example scripts write) and ``notebooks/*.ipynb`` (executed, committed
with their outputs) keep their repository paths in the site: a page links ``examples/results/demo.png`` or
``notebooks/quickstart.ipynb`` and ``mkdocs build --strict`` checks the link like any other. The files are added to
mkdocs' file list rather than copied into ``docs/``, so there is one copy of each, and the notebooks are rendered by
the mkdocs-jupyter plugin (without executing them), which runs after this hook.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = ("examples/results/*.png", "notebooks/*.ipynb")


@event_priority(100)  # before mkdocs-jupyter's on_files, which turns the notebooks into pages
def on_files(files: Files, config: MkDocsConfig) -> Files:
    for pattern in PUBLISHED:
        for path in sorted(ROOT.glob(pattern)):
            src_uri = path.relative_to(ROOT).as_posix()
            if files.get_file_from_path(src_uri) is None:
                # A real source directory (the repository root), not File.generated: mkdocs-jupyter's NotebookFile
                # finds the notebook through src_dir.
                files.append(File(src_uri, str(ROOT), config.site_dir, config.use_directory_urls))
    return files
