"""Lint is part of the test run: `ruff check`, and the import-linter contract of the package's layers
(pyproject.toml: no import circles, entry points on top, values at the bottom)."""

import shutil
import subprocess
import sys
from pathlib import Path

from .helpers import REPO_ROOT


def _tool(name: str) -> str:
    return shutil.which(name) or str(Path(sys.executable).parent / name)


def test_ruff_check_passes():
    result = subprocess.run([_tool("ruff"), "check", "."], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_layers_contract_is_kept():
    result = subprocess.run(
        [_tool("lint-imports"), "--no-cache"], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


def test_every_module_has_its_place_in_the_layers():
    """A module missing from the contract is checked by nobody: its imports could go any way."""
    import re
    import tomllib

    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    (contract,) = config["tool"]["importlinter"]["contracts"]
    placed = {name for layer in contract["layers"] for name in re.split(r"\s*[:|]\s*", layer)}
    package = REPO_ROOT / "zart"
    modules = {f"zart.{path.stem}" for path in package.glob("*.py") if path.stem not in ("__init__",)}
    modules |= {f"zart.{path.name}" for path in package.iterdir() if (path / "__init__.py").exists()}
    modules.discard("zart.migrations")
    assert modules - placed == set()
