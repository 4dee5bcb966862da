"""Forward-only schema migrations for Postgres (and, when given, ClickHouse).

``schema/postgres/NNNN_name.sql`` files are applied in order, each in its own transaction, and
recorded in ``schema_migrations``. A session advisory lock makes two processes running it at once
safe: the second waits, then finds nothing left to apply.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import asyncpg

log = logging.getLogger("linkedge.migrate")

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schema"
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_LOCK_ID = 0x6C6B6564  # "lked"


class MigrationError(RuntimeError):
    """The schema directory is inconsistent (gaps, duplicate numbers)."""


def migration_files(kind: str) -> list[tuple[int, Path]]:
    """The ``(number, path)`` of every migration of ``kind`` ("postgres" or "clickhouse"), in order."""
    found: dict[int, Path] = {}
    for path in sorted((SCHEMA_DIR / kind).glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise MigrationError(f"{path}: migration files are named NNNN_lower_snake.sql")
        number = int(match.group(1))
        if number in found:
            raise MigrationError(f"{path}: number {number} is used twice")
        found[number] = path
    return sorted(found.items())


async def migrate_postgres(dsn: str) -> list[str]:
    """Apply the pending Postgres migrations; return the names applied."""
    conn = await asyncpg.connect(dsn, timeout=30)
    applied: list[str] = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
        try:
            await conn.execute(
                """CREATE TABLE IF NOT EXISTS schema_migrations (
                       version    integer PRIMARY KEY,
                       name       text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            done = {
                row["version"] for row in await conn.fetch("SELECT version FROM schema_migrations")
            }
            for number, path in migration_files("postgres"):
                if number in done:
                    continue
                async with conn.transaction():
                    await conn.execute(path.read_text())
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                        number,
                        path.name,
                    )
                log.info("applied migration %s", path.name)
                applied.append(path.name)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)
    finally:
        await conn.close()
    return applied


def _statements(sql: str) -> list[str]:
    """Split a DDL file on ``;`` at line ends; ClickHouse takes one statement per call."""
    parts, current = [], []
    for line in sql.splitlines():
        stripped = line.strip()
        if stripped.startswith("--"):
            continue
        current.append(line)
        if stripped.endswith(";"):
            parts.append("\n".join(current).strip().rstrip(";"))
            current = []
    tail = "\n".join(current).strip()
    if tail:
        parts.append(tail)
    return [p for p in parts if p]


def migrate_clickhouse(url: str, client: Any = None) -> list[str]:
    """Apply pending ``schema/clickhouse`` migrations, recorded in ``schema_migrations``.

    The DDL uses ``IF NOT EXISTS`` throughout, so two processes racing here converge.
    """
    from linkedge.clickhouse import connect

    ch = client if client is not None else connect(url)
    ch.command(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version UInt32, name String, "
        "applied_at DateTime DEFAULT now()) ENGINE = ReplacingMergeTree ORDER BY version"
    )
    done = {row[0] for row in ch.query("SELECT version FROM schema_migrations FINAL").result_rows}
    applied = []
    for number, path in migration_files("clickhouse"):
        if number in done:
            continue
        for statement in _statements(path.read_text()):
            ch.command(statement)
        ch.insert("schema_migrations", [[number, path.name]], column_names=["version", "name"])
        log.info("applied clickhouse migration %s", path.name)
        applied.append(path.name)
    return applied
