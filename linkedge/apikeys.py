"""API keys: high-entropy, prefixed ``lk_``, shown once, stored only as a SHA-256 digest.

The edge looks a presented key up by its digest (an index hit, no scan); the digest of a random
256-bit key reveals nothing to compare against, and the final check uses ``hmac.compare_digest``.
"""

from __future__ import annotations

import hashlib
import secrets

import asyncpg

KEY_PREFIX = "lk_"
SCOPES = ("links:read", "links:write", "stats:read")
DEFAULT_SCOPES = SCOPES


class UnknownScopeError(ValueError):
    """A scope that linkedge does not know was asked for."""


def generate() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def display_prefix(key: str) -> str:
    """What is stored and shown to tell keys apart: ``lk_`` and the next 6 characters."""
    return key[: len(KEY_PREFIX) + 6]


def check_scopes(scopes: list[str] | tuple[str, ...]) -> list[str]:
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise UnknownScopeError(
            f"unknown scope(s) {', '.join(unknown)}; known: {', '.join(SCOPES)}"
        )
    return sorted(set(scopes))


async def ensure_account(conn: asyncpg.Connection, name: str) -> int:
    row = await conn.fetchrow(
        """INSERT INTO accounts (name) VALUES ($1)
           ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id""",
        name,
    )
    assert row is not None
    return int(row["id"])


async def create_key(
    conn: asyncpg.Connection, account: str, scopes: list[str] | tuple[str, ...] = DEFAULT_SCOPES
) -> tuple[int, str]:
    """Create the account if needed and a key for it; return ``(key_id, key)``. Show it once."""
    wanted = check_scopes(scopes)
    async with conn.transaction():
        account_id = await ensure_account(conn, account)
        key = generate()
        key_id = await conn.fetchval(
            "INSERT INTO api_keys (account_id, prefix, digest, scopes) VALUES ($1, $2, $3, $4) RETURNING id",
            account_id,
            display_prefix(key),
            digest(key),
            wanted,
        )
    return int(key_id), key


async def revoke_key(conn: asyncpg.Connection, key_or_prefix: str) -> int:
    """Revoke by the full key or by its shown prefix; return how many keys were revoked."""
    if len(key_or_prefix) > len(KEY_PREFIX) + 6:
        result = await conn.execute(
            "UPDATE api_keys SET revoked_at = now() WHERE digest = $1 AND revoked_at IS NULL",
            digest(key_or_prefix),
        )
    else:
        result = await conn.execute(
            "UPDATE api_keys SET revoked_at = now() WHERE prefix = $1 AND revoked_at IS NULL",
            key_or_prefix,
        )
    return int(result.split()[-1])
