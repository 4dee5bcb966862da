"""Postgres migrations that change data: applied to a database holding the rows they fix."""

from __future__ import annotations

import datetime
import uuid

import asyncpg
import pytest

from linkedge.migrate import migrate_postgres
from tests.conftest import Stores, run


def test_expires_at_outside_what_readers_take_back_is_moved_inside_and_refused(
    stores: Stores,
) -> None:
    """Rows stored at year 10000 or +-infinity (before the API checked expires_at) broke every
    read of their account's links; migration 0004 moves them inside years 1-9999 and a
    constraint keeps them there."""
    name = f"m{uuid.uuid4().hex[:12]}"
    base = stores.database_url.rsplit("/", 1)[0]

    async def go() -> list[datetime.datetime]:
        admin = await asyncpg.connect(stores.database_url)
        await admin.execute(f"CREATE DATABASE {name}")
        try:
            dsn = f"{base}/{name}"
            await migrate_postgres(dsn)
            conn = await asyncpg.connect(dsn)
            try:
                await conn.execute("ALTER TABLE links DROP CONSTRAINT links_expires_at_readable")
                await conn.execute("DELETE FROM schema_migrations WHERE version = 4")
                account = await conn.fetchval(
                    "INSERT INTO accounts (name) VALUES ('m') RETURNING id"
                )
                for code, at in (("late", "10000-01-01 00:00:00+00"), ("inf", "infinity"),
                                 ("ninf", "-infinity"), ("fine", "2030-01-01 00:00:00+00")):  # fmt: skip
                    await conn.execute(
                        "INSERT INTO links (account_id, code, url, expires_at)"
                        " VALUES ($1, $2, 'https://example.com/', $3::text::timestamptz)",
                        account, code, at,
                    )  # fmt: skip
                await migrate_postgres(dsn)
                rows = await conn.fetch("SELECT code, expires_at FROM links ORDER BY code")
                with pytest.raises(asyncpg.CheckViolationError):
                    await conn.execute(
                        "UPDATE links SET expires_at = '10000-06-01+00' WHERE code = 'fine'"
                    )
                return [row["expires_at"] for row in rows]  # read back: no error
            finally:
                await conn.close()
        finally:
            await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
            await admin.close()

    fine, inf, late, ninf = run(go())
    top = datetime.datetime(9999, 12, 31, 23, 59, 59, 999998, tzinfo=datetime.UTC)
    assert late == inf == top
    assert ninf == datetime.datetime(1, 1, 1, 0, 0, 0, 1, tzinfo=datetime.UTC)
    assert fine == datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
