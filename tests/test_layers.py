"""Dependencies point downwards only (docs/design.md, "Layers"): parse each module with `ast`
and fail when it imports a genmodels package from a higher layer."""

import ast
from pathlib import Path

import pytest

import genmodels

SRC = Path(genmodels.__file__).parent

# The layer order, stated once, top to bottom. A package may import its own row and the rows
# below it, never a row above. registry sits with models: models register themselves in it
# (and it imports them only lazily, by module path); config.py (the --set parser) imports
# nothing of genmodels and sits at the bottom, where data sets read their options with it.
LAYERS = (
    ("cli", "report", "tour", "__main__", "bench"),
    ("train", "evaluate"),
    ("models", "registry"),
    ("inference",),
    ("nn", "distributions"),
    ("integrate",),
    ("data", "plot", "config"),
)

# Packages that may import nothing from genmodels but themselves: integrate is a small
# numerical library that knows nothing about models (nor about data sets or pictures).
SELF_CONTAINED = ("integrate",)

# Every package that exists now is checked (report comes with the tour).
LAYER_CHECKED = tuple(
    name
    for row in LAYERS
    for name in row
    if (SRC / f"{name}.py").exists() or (SRC / name / "__init__.py").exists()
)

_ROW = {name: i for i, row in enumerate(LAYERS) for name in row}


def _allowed(package: str) -> set[str]:
    if package in SELF_CONTAINED:
        return {package}
    return {name for name, row in _ROW.items() if row >= _ROW[package]}


def _module_name(path: Path) -> list[str]:
    return ["genmodels", *path.relative_to(SRC).with_suffix("").parts]


def imported_genmodels_modules(source: str, module: list[str], is_package: bool) -> list[str]:
    """Every genmodels module imported anywhere in ``source`` (also inside functions and
    ``if TYPE_CHECKING:``), as dotted names, relative imports resolved against ``module``."""
    found = []
    package = module if is_package else module[:-1]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = base + (node.module.split(".") if node.module else [])
            else:
                target = node.module.split(".")
            if node.module is None or target == ["genmodels"]:
                # `from .. import x`, `from genmodels import x`: x is a module or a name in it
                found += [".".join([*target, a.name]) for a in node.names]
            else:
                found.append(".".join(target))
    return [m for m in found if m == "genmodels" or m.startswith("genmodels.")]


def layer_violations(package: str) -> list[str]:
    allowed = _allowed(package)
    root = SRC / package
    files = sorted(root.rglob("*.py")) if root.is_dir() else [SRC / f"{package}.py"]
    bad = []
    for path in files:
        name = _module_name(path)
        is_package = name[-1] == "__init__"
        if is_package:
            name = name[:-1]
        for imported in imported_genmodels_modules(path.read_text(), name, is_package):
            top = imported.split(".")[1] if "." in imported else "<genmodels root>"
            # The root package is light and lazy: a plain name from it (`__version__`) is no
            # dependency; a subpackage reached through it counts as that subpackage.
            if top not in _ROW and top != "<genmodels root>":
                continue
            if top not in allowed:
                bad.append(f"{'.'.join(name)} imports {imported}")
    return bad


def test_the_layer_table_places_every_package_once():
    listed = [name for row in LAYERS for name in row]
    assert len(listed) == len(set(listed))
    present = {p.stem for p in SRC.glob("*.py") if p.stem != "__init__"}
    present |= {p.parent.name for p in SRC.glob("*/__init__.py")}
    assert present <= set(listed), f"place these in LAYERS: {sorted(present - set(listed))}"


@pytest.mark.parametrize("package", LAYER_CHECKED)
def test_package_imports_nothing_above_it(package):
    assert layer_violations(package) == []


def test_the_checker_sees_upward_imports():
    src = """
from __future__ import annotations
import torch
from .core import x
from ..distributions.flow import standard_normal_log_prob
from .. import registry
def f():
    import genmodels.models.flows
    from genmodels import train
"""
    found = imported_genmodels_modules(src, ["genmodels", "plot", "flows"], is_package=False)
    assert sorted(found) == [
        "genmodels.distributions.flow",
        "genmodels.models.flows",
        "genmodels.plot.core",
        "genmodels.registry",
        "genmodels.train",
    ]
    allowed = _allowed("plot")
    assert [m for m in found if m.split(".")[1] not in allowed] == [
        m for m in found if m != "genmodels.plot.core"
    ]
    assert _allowed("integrate") == {"integrate"}
    assert "plot" in _allowed("models") and "models" not in _allowed("inference")
