"""The command line, ``python -m jaxdrop demo|bench|info`` (also the ``jaxdrop`` script), and its shared helpers.

Tooling, not library API: ``import jaxdrop`` never imports it, each command imports its extras (optax, scikit-learn,
matplotlib, tqdm, the benchmark's peers) when it runs, and nothing here knows about the source repository, so the
commands work the same from an installed wheel. ``markdown_table`` is the one table formatter of the commands and
of the repository's example scripts.
"""

from jaxdrop.cli._main import build_parser, main
from jaxdrop.cli._table import markdown_table

__all__ = ["build_parser", "main", "markdown_table"]
