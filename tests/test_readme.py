"""The names the README and guides mention exist (tests/test_docs.py runs the README's code blocks)."""

import re
from pathlib import Path

import jaxdrop

ROOT = Path(__file__).parents[1]


def _expand(name: str) -> list[str]:
    """``spatial_dropout{1,2,3}d`` -> ``spatial_dropout1d``, ``spatial_dropout2d``, ``spatial_dropout3d``."""
    match = re.fullmatch(r"(\w+)\{([\d,]+)\}(\w*)", name)
    return [f"{match[1]}{part}{match[3]}" for part in match[2].split(",")] if match else [name]


def test_variant_names_in_the_readme_exist():
    readme = (ROOT / "README.md").read_text()
    start = readme.index("\n## Variants")
    section = readme[start : readme.index("\n## ", start + 1)]
    names = [n for raw in re.findall(r"`([\w{},]+)`", section) for n in _expand(raw)]
    assert len(names) >= 20
    arguments = {"key", "deterministic", "attention_fn"}  # argument names the section mentions, not functions
    missing = [name for name in names if name not in arguments and not hasattr(jaxdrop, name)]
    assert not missing, missing


def test_mc_result_fields_named_in_the_docs_exist():
    fields = set(jaxdrop.mc.ClassificationPrediction.__dataclass_fields__)
    assert {"probs", "predictive_entropy", "mutual_information"} <= fields
