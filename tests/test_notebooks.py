"""The committed notebooks execute from top to bottom (with ``JAXDROP_QUICK=1``: small settings).

The notebooks are edited as notebooks; their committed outputs come from ``jupyter execute --inplace
notebooks/NAME.ipynb`` (full settings, nbclient's command), run from the repository root.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("matplotlib")
pytest.importorskip("sklearn")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))


def test_there_are_at_least_three_notebooks_with_outputs():
    assert len(NAMES) >= 3, NAMES
    for name in NAMES:
        notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        code_cells = [c for c in notebook.cells if c.cell_type == "code"]
        assert all(c.get("outputs") is not None for c in code_cells)
        assert any(c.get("outputs") for c in code_cells), f"{name} is committed without outputs"


def test_quickstart_shows_every_variant_mask_as_a_picture():
    notebook = nbformat.read(NOTEBOOKS / "quickstart.ipynb", as_version=4)
    cell = next(c for c in notebook.cells if c.cell_type == "code" and "Keep-masks at rate" in c.source)
    assert any("image/png" in output.get("data", {}) for output in cell.outputs)
    for variant in ("dropout", "spatial_dropout2d", "dropblock2d", "drop_path", "locked_dropout", "token_dropout"):
        assert f"jaxdrop.{variant}(" in cell.source


# The notebooks (25-35 s each on 2 cores) run with `-m slow`, which keeps the default suite under its 10-minute
# budget; the test above checks the quickstart's committed outputs by default.
@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_notebook_executes(name, monkeypatch):
    monkeypatch.setenv("JAXDROP_QUICK", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    errors = [
        o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"
    ]
    assert not errors
    assert os.environ["JAXDROP_QUICK"] == "1"
