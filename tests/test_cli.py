"""The ``linkedge`` command: keys, migrations and configuration errors, run as real subprocesses."""

from __future__ import annotations

import dataclasses
import hashlib
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
import pytest
from conftest import ROOT, Db, Stores, run

from linkedge.migrate import migration_files
from linkedge.settings import Secret, Settings


def linkedge(stores: Stores, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "linkedge.cli", *args],
        env=stores.env(**env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def key_row(db: Db, account: str) -> list[asyncpg.Record]:
    return db.fetch(
        """SELECT k.* FROM api_keys k JOIN accounts a ON a.id = k.account_id
           WHERE a.name = $1 ORDER BY k.id""",
        account,
    )


def test_create_key_prints_the_key_once_and_stores_only_its_digest(stores: Stores, db: Db) -> None:
    account = f"cli-{uuid.uuid4().hex[:8]}"
    result = linkedge(stores, "create-key", "--account", account, "--scopes", "links:read")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split()
    assert len(lines) == 1 and lines[0].startswith("lk_")
    key = lines[0]
    assert key not in result.stderr
    (row,) = key_row(db, account)
    assert bytes(row["digest"]) == hashlib.sha256(key.encode()).digest()
    assert row["prefix"] == key[:9]
    assert row["scopes"] == ["links:read"]
    assert not any(key in str(value) for value in row.values())


def test_create_key_refuses_an_unknown_scope(stores: Stores, db: Db) -> None:
    account = f"cli-{uuid.uuid4().hex[:8]}"
    result = linkedge(stores, "create-key", "--account", account, "--scopes", "links:everything")
    assert result.returncode == 2
    assert "links:everything" in result.stderr
    assert result.stdout == ""
    assert key_row(db, account) == []


def test_revoke_key_by_key_then_by_prefix(stores: Stores, db: Db) -> None:
    account = f"cli-{uuid.uuid4().hex[:8]}"
    first = linkedge(stores, "create-key", "--account", account).stdout.strip()
    second = linkedge(stores, "create-key", "--account", account).stdout.strip()

    revoked = linkedge(stores, "revoke-key", first)
    assert revoked.returncode == 0, revoked.stderr
    rows = key_row(db, account)
    assert rows[0]["revoked_at"] is not None and rows[1]["revoked_at"] is None

    again = linkedge(stores, "revoke-key", first)
    assert again.returncode == 1
    assert "no active key" in again.stderr

    by_prefix = linkedge(stores, "revoke-key", second[:9])
    assert by_prefix.returncode == 0, by_prefix.stderr
    assert all(row["revoked_at"] is not None for row in key_row(db, account))


@pytest.fixture
def empty_database(stores: Stores, db: Db) -> str:
    """A new, empty database on the test Postgres; its URL."""
    name = f"migrate_{uuid.uuid4().hex[:10]}"
    db.execute(f'CREATE DATABASE "{name}"')
    return stores.database_url.rsplit("/", 1)[0] + f"/{name}"


def applied_versions(dsn: str) -> list[int]:
    async def go() -> list[int]:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            return [
                r["version"]
                for r in await conn.fetch("SELECT version FROM schema_migrations ORDER BY 1")
            ]
        finally:
            await conn.close()

    return run(go())  # type: ignore[no-any-return]


def applied_count(stderr: str) -> int:
    """The N of the ``postgres: N migration(s) applied`` log line."""
    (line,) = [
        line
        for line in stderr.splitlines()
        if "migration(s) applied" in line and "postgres" in line
    ]
    return int(line.split("postgres: ")[1].split()[0])


def test_migrate_twice_applies_nothing_the_second_time(stores: Stores, empty_database: str) -> None:
    expected = [number for number, _ in migration_files("postgres")]
    first = linkedge(
        stores, "migrate", "--postgres-only", DATABASE_URL=empty_database, LOG_LEVEL="INFO"
    )
    assert first.returncode == 0, first.stderr
    assert applied_count(first.stderr) == len(expected)
    second = linkedge(
        stores, "migrate", "--postgres-only", DATABASE_URL=empty_database, LOG_LEVEL="INFO"
    )
    assert second.returncode == 0, second.stderr
    assert applied_count(second.stderr) == 0
    assert applied_versions(empty_database) == expected


def test_migrate_in_two_processes_at_once(stores: Stores, empty_database: str) -> None:
    expected = [number for number, _ in migration_files("postgres")]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "linkedge.cli", "migrate", "--postgres-only"],
            env=stores.env(DATABASE_URL=empty_database, LOG_LEVEL="INFO"),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [proc.communicate(timeout=60) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    # Between them every migration was applied exactly once.
    assert sum(applied_count(err) for _, err in outputs) == len(expected)
    assert applied_versions(empty_database) == expected


def test_migrate_clickhouse_twice_is_a_no_op(stores: Stores, tmp_path: Path) -> None:
    url = f"chdb://{tmp_path / 'clickhouse'}"
    for expected in (len(migration_files("clickhouse")), 0):
        result = linkedge(stores, "migrate", CLICKHOUSE_URL=url, LOG_LEVEL="INFO")
        assert result.returncode == 0, result.stderr
        lines = [line for line in result.stderr.splitlines() if "clickhouse:" in line]
        assert lines and f"clickhouse: {expected} migration(s) applied" in lines[0]


@pytest.mark.parametrize(
    ("name", "value"),
    [("PORT", "eighty"), ("CLICK_SHARDS", "0"), ("STORE_RAW_IP", "maybe"), ("CACHE_TTL_S", "-1")],
)
def test_a_malformed_variable_is_named_and_exits_2(stores: Stores, name: str, value: str) -> None:
    result = linkedge(stores, "migrate", "--postgres-only", **{name: value})
    assert result.returncode == 2
    assert f"configuration error: {name}:" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_store_url_is_named_and_exits_2(stores: Stores) -> None:
    result = linkedge(stores, "create-key", "--account", "nobody", DATABASE_URL="")
    assert result.returncode == 2
    assert "DATABASE_URL is not set" in result.stderr
    assert "Traceback" not in result.stderr


def readme_config_table() -> dict[str, str]:
    """``{VARIABLE: default cell}`` of the README's one configuration table."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) >= 3:
            rows[cells[0].strip("`")] = cells[1]
    return rows


def readme_default(value: object) -> str:
    """How the README writes a default."""
    if isinstance(value, Secret):
        return "(unset)"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, tuple):
        return f"`{','.join(value)}`" if value else "(none)"
    if isinstance(value, float):
        return f"`{value:g}`"
    if value == "":
        return "(empty)"
    return f"`{value}`"


def test_readme_lists_every_setting_with_its_default() -> None:
    table = readme_config_table()
    expected = {f.name.upper(): readme_default(f.default) for f in dataclasses.fields(Settings)}
    wrong = {name: default for name, default in expected.items() if table.get(name) != default}
    assert not wrong, "README configuration table: add or fix these rows:\n" + "\n".join(
        f"| `{name}` | {default} | <what it does> |" for name, default in wrong.items()
    )
