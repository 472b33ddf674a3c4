"""The trainer package's shape (docs/trainer.md, "Package layout"): the entry points at the top,
their libraries in subpackages stacked in layers, and ``contract.py`` on the standard library only.

Read from the source with ``ast`` (nothing is imported), so a lazy import inside a function
counts as much as one at the top of a module: it is an arrow all the same.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "trainer"

# Lowest first: a subpackage may import its own layer and those before it, never one after it.
LAYERS = ("core", "storage", "model", "data", "evaluation", "tuning", "step")
# The top level holds the entry points (``python -m trainer.<step>``: the image's CLI contract)
# and the contract shared with the Airflow side; everything else lives in a layer.
TOP_LEVEL_LIBRARIES = {"__init__", "contract"}


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name (``trainer.step.cli``)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(path: Path) -> set[str]:
    """The absolute module names ``path`` imports (``from trainer.x import y`` yields both
    ``trainer.x`` and ``trainer.x.y``: ``y`` may be a module or a name, the caller tells)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import (the package imports absolutely)"
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def _trainer_imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's own modules ``path`` imports."""
    return {name for name in _imports(path) if name in modules and name != "trainer"}


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS) else None


def _entry_points(modules: dict[str, Path]) -> set[str]:
    return {name for name, path in modules.items()
            if _layer(name) is None and "__main__" in path.read_text()}


MODULES = _modules()


def test_the_top_level_holds_only_entry_points_and_the_contract():
    top = {name.removeprefix("trainer.") for name in MODULES if _layer(name) is None and name != "trainer"}
    entry = {name.removeprefix("trainer.") for name in _entry_points(MODULES)}
    assert top - entry == {"contract"}, "a top-level module that is neither an entry point nor the contract"
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"} == set(LAYERS)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _layer(m)))
def test_a_library_never_imports_an_entry_point(module):
    entry = _entry_points(MODULES)
    assert not _trainer_imports(MODULES[module], MODULES) & entry


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _layer(m)))
def test_a_layer_imports_only_itself_and_the_layers_below(module):
    rank = LAYERS.index(_layer(module))
    upward = sorted(name for name in _trainer_imports(MODULES[module], MODULES)
                    if _layer(name) and LAYERS.index(_layer(name)) > rank)
    assert not upward, f"{module} ({LAYERS[rank]}) imports a higher layer: {upward}"


def test_the_contract_imports_only_the_standard_library():
    """It is copied byte for byte beside the DAGs, which have none of the trainer's packages."""
    imported = {name.split(".")[0] for name in _imports(PACKAGE / "contract.py")}
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported


def test_the_checks_above_see_the_arrows_they_are_about():
    """Guards the parsing: known arrows are found (a checker that finds nothing passes anything)."""
    assert "trainer.storage.artifacts" in _trainer_imports(MODULES["trainer.step.status_record"], MODULES)
    assert "trainer.predict_window_task" in _trainer_imports(MODULES["trainer.predict_task"], MODULES)
    assert _layer("trainer.step") == "step" and _layer("trainer.train_task") is None
