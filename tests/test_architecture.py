"""The layering of docs/architecture.md, checked on the source: imports only point down, the CLI
does no batching or threading of its own, modules stay readable, and the library never imports
the training package (but for `lincae train`, its command-line face)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "lincae_cli"
# Lower numbers sit lower; a module may import its own layer and the layers below it.
LAYERS = {
    "paths": 0,
    "errors": 0,
    "atomic": 0,
    "version": 0,
    "nn": 1,
    "audio": 1,
    "latents": 2,
    "hub": 3,
    "engine": 4,
    "eval": 5,
    "batch": 5,
    "data": 5,  # LatentDataset reads what batch/ wrote; a torch Dataset, not the CLI's
    "cli": 6,
    "__init__": 7,  # the facade re-exports from everywhere
}
MAX_LINES = 400


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _layer(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def _imported_lincae_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {name for name in names if name.split(".")[0] in ("lincae_cli", "lincae_training")}


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path: Path) -> None:
    own = LAYERS[_layer(path)]
    for name in _imported_lincae_modules(path):
        if name.startswith("lincae_training"):
            assert path == PACKAGE / "cli" / "train.py", f"{path.name} imports {name}"
            continue
        parts = name.split(".")
        if len(parts) == 1:
            assert own == LAYERS["__init__"], f"{path} imports the package facade"
            continue
        assert LAYERS[parts[1]] <= own, f"{path.relative_to(PACKAGE)} imports {name} (above it)"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_stay_readable(path: Path) -> None:
    assert len(path.read_text().splitlines()) <= MAX_LINES


def test_the_cli_only_parses_and_renders() -> None:
    for path in (PACKAGE / "cli").glob("*.py"):
        imported = _imported_lincae_modules(path) | {
            alias.name
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Import)
            for alias in node.names
        }
        assert not imported & {"threading", "queue", "glob"}, path.name
        assert "lincae_cli.engine.shard" not in imported, path.name
        assert "lincae_cli.batch.plan" not in imported, path.name
