"""``require``: imports an optional package when a command needs it, or says to install jaxdrop's examples extra."""

from __future__ import annotations

import importlib
from types import ModuleType

_PIP_NAMES = {"sklearn": "scikit-learn"}  # where the name to install differs from the name to import


def require(module: str, purpose: str) -> ModuleType:
    """Imports ``module``, or raises an ImportError that names what needs it and the extra that installs it.

    Args:
      module: the dotted module name, e.g. ``"sklearn.datasets"``.
      purpose: what needs it, for the message (``"the digits data set"``).

    Returns:
      The imported module.
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        package = _PIP_NAMES.get(module.split(".")[0], module.split(".")[0])
        raise ImportError(
            f'{purpose} needs the `{package}` package; install the examples extra: pip install "jaxdrop[examples]".'
        ) from err
