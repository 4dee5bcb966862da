"""The demo account, key and link that ``linkedge up`` makes, so a new user has something to try."""

from __future__ import annotations

import asyncpg

from linkedge import apikeys

DEMO_ACCOUNT = "demo"
DEMO_CODE = "hello"
DEMO_TARGET = "https://example.com/"


async def ensure_demo(dsn: str, previous_key: str | None) -> str:
    """Ensure the demo account, its key and the demo link; return the key.

    Keys are stored as digests only, so the key of a previous run (from its run.env) is reused when
    its digest is still an active key of the demo account; otherwise a new one is made.
    """
    conn = await asyncpg.connect(dsn, timeout=30)
    try:
        account_id = await apikeys.ensure_account(conn, DEMO_ACCOUNT)
        key = previous_key or ""
        if not key or not await conn.fetchval(
            "SELECT 1 FROM api_keys WHERE digest = $1 AND account_id = $2 AND revoked_at IS NULL",
            apikeys.digest(key), account_id,
        ):  # fmt: skip
            _, key = await apikeys.create_key(conn, DEMO_ACCOUNT)
        # A demo link that was edited or deleted keeps its row: DO NOTHING leaves it as the user left it.
        await conn.execute(
            "INSERT INTO links (account_id, code, url) VALUES ($1, $2, $3) ON CONFLICT (code) DO NOTHING",
            account_id, DEMO_CODE, DEMO_TARGET,
        )  # fmt: skip
        return key
    finally:
        await conn.close()
