"""Importing the user's app modules (`--app`), whose decorators register workflows, steps and queues.

Shared by the CLI and the HTTP server's spawned processes; a module that fails to import is a
ConfigurationError naming it (the CLI prints it as its one error line).
"""

from __future__ import annotations

import importlib
import os
import sys

from .errors import ConfigurationError


def import_apps(modules: tuple[str, ...] | list[str]) -> None:
    """Import the modules that define workflows (their decorators register them)."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as exc:
            raise ConfigurationError(
                f"cannot import app module {module!r}: {type(exc).__name__}: {exc}"
            ) from None
