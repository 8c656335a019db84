"""The embedded PostgreSQL used when no database URL is configured.

`pgserver` ships PostgreSQL binaries as a Python package. The data lives in `./.zart/pgdata` (or
`ZART_EMBEDDED_DIR`); the server starts on first use, is shared by every Zart process on the machine
that points at the same directory, and stops when the last of them exits.
"""

from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path
from typing import Any

from .errors import ConfigurationError

_lock = threading.Lock()
_servers: dict[Path, Any] = {}


def data_dir() -> Path:
    return Path(os.environ.get("ZART_EMBEDDED_DIR", ".zart/pgdata")).resolve()


def embedded_url() -> str:
    """Start (or attach to) the embedded server and return its connection URL."""
    try:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); it falls back
            # to /tmp, which is fine for the embedded server's lock file.
            warnings.simplefilter("ignore")
            import pgserver
    except ImportError:
        raise ConfigurationError(
            "no database configured: set ZART_DATABASE_URL or pass --database-url, "
            "or install the embedded PostgreSQL with: pip install 'zart[embedded]'"
        ) from None
    path = data_dir()
    with _lock:
        server = _servers.get(path)
        if server is None:
            path.mkdir(parents=True, exist_ok=True)
            try:
                server = pgserver.get_server(path)
            except Exception as exc:  # pgserver raises plain exceptions with a log to read
                raise ConfigurationError(
                    f"could not start the embedded PostgreSQL in {path}: {exc} (see {path / 'log'})"
                ) from None
            _servers[path] = server
        return server.get_uri()
