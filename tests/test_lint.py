"""`ruff check` is part of the test run, so CI fails on lint errors too."""

import shutil
import subprocess
import sys

from .helpers import REPO_ROOT


def test_ruff_check_passes():
    ruff = shutil.which("ruff") or str(__import__("pathlib").Path(sys.executable).parent / "ruff")
    result = subprocess.run([ruff, "check", "."], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
