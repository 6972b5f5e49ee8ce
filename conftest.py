"""Repository-wide pytest configuration: it applies to ``tests/`` and to the doctests collected in ``jaxdrop/``."""

import importlib.util

# ``jaxdrop.equinox`` imports Equinox, an optional dependency: collect its doctests only where Equinox is installed
# (``tests/test_equinox.py`` skips itself the same way).
collect_ignore = [] if importlib.util.find_spec("equinox") is not None else ["jaxdrop/equinox.py"]
