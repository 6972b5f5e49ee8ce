"""The command line, ``python -m jaxdrop demo|bench|info`` (also the ``jaxdrop`` script).

Tooling, not library API: ``import jaxdrop`` never imports it, each command imports its extras (optax, scikit-learn,
matplotlib, tqdm, the benchmark's peers) when it runs, and nothing here knows about the source repository, so the
commands work the same from an installed wheel.
"""

from jaxdrop.cli._main import main

__all__ = ["main"]
