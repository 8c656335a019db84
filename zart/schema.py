"""Migrations: the numbered SQL files in `migrations/`, applied in order, each once.

Several processes may migrate at once (a supervisor and an HTTP server starting together): a
session-level advisory lock serialises them, and the second one finds nothing left to do.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

import attrs

from .db import connect

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_LOCK_KEY = 0x7A617274  # "zart"
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@attrs.frozen
class Migration:
    version: int
    name: str
    sql: str = attrs.field(repr=False)


def available_migrations() -> list[Migration]:
    found = []
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        match = _FILE.match(path.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), path.read_text()))
    return found


def migrate(url: str) -> list[Migration]:
    """Apply every migration not yet applied; returns the ones applied now."""
    applied_now = []
    with connect(url) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS zart_schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {row[0] for row in conn.execute("SELECT version FROM zart_schema_migrations")}
            for migration in available_migrations():
                if migration.version in done:
                    continue
                with conn.transaction():
                    conn.execute(migration.sql.encode())
                    conn.execute(
                        "INSERT INTO zart_schema_migrations (version, name) VALUES (%s, %s)",
                        (migration.version, migration.name),
                    )
                applied_now.append(migration)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied_now


_checked: set[str] = set()
_checked_lock = threading.Lock()


def ensure_migrated(url: str) -> None:
    """Migrate once per process and URL, so that `zart.start()` works on a fresh database."""
    if url in _checked:
        return
    with _checked_lock:
        if url not in _checked:
            migrate(url)
            _checked.add(url)
