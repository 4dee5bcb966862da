"""The SQL of the link API: every statement scoped to one account, one round trip each.

A link another account owns is indistinguishable from one that does not exist: every query
filters on ``account_id``. Deleted links keep their row and their code (``deleted_at``), so a code
is never handed out twice. Click counts come from the aggregator's tables through a LEFT JOIN
(0 when a link has none yet).
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Callable, Sequence
from datetime import date
from typing import Any

import asyncpg
import orjson

from edge.api.inputs import NewLink
from edge.api.problems import Problem

CODE_ALPHABET = string.ascii_letters + string.digits
CODE_LENGTH = 7
CODE_ATTEMPTS = 5  # rounds of fresh codes for the items whose generated code was taken
MAX_ID = 2**63 - 1

_LINK_COLUMNS = """l.id, l.code, l.url, l.redirect_type, l.expires_at, l.expired_url,
    l.forward_query, l.tags, l.disabled, l.created_at, l.updated_at"""
_WITH_TOTALS = f"""{_LINK_COLUMNS}, COALESCE(t.clicks, 0) AS clicks,
    COALESCE(t.human_clicks, 0) AS human_clicks"""

_INSERT = f"""
INSERT INTO links AS l (account_id, code, url, redirect_type, expires_at, expired_url,
                        forward_query, tags, disabled)
SELECT $1, x.code, x.url, x.redirect_type, x.expires_at, x.expired_url, x.forward_query,
       x.tags, x.disabled
FROM jsonb_to_recordset($2::jsonb) AS x(code text, url text, redirect_type smallint,
     expires_at timestamptz, expired_url text, forward_query boolean, tags text[], disabled boolean)
ON CONFLICT (code) DO NOTHING
RETURNING {_LINK_COLUMNS}, 0::bigint AS clicks, 0::bigint AS human_clicks"""

_SELECT_ONE = f"""
SELECT {_WITH_TOTALS}
FROM links l LEFT JOIN link_click_totals t ON t.link_id = l.id
WHERE l.account_id = $1 AND l.code = $2 AND l.deleted_at IS NULL"""

_SELECT_PAGE = f"""
SELECT {_WITH_TOTALS}
FROM links l LEFT JOIN link_click_totals t ON t.link_id = l.id
WHERE l.account_id = $1 AND l.deleted_at IS NULL AND l.id < $2
  AND ($3::text IS NULL OR l.tags @> ARRAY[$3::text])
ORDER BY l.id DESC
LIMIT $4"""

_DELETE = """
UPDATE links SET deleted_at = now(), updated_at = now()
WHERE account_id = $1 AND code = $2 AND deleted_at IS NULL"""

_DAILY = """
SELECT d::date AS day, COALESCE(c.clicks, 0) AS clicks, COALESCE(c.human_clicks, 0) AS human_clicks
FROM generate_series($2::date, $3::date, interval '1 day') AS d
LEFT JOIN link_daily_clicks c ON c.link_id = $1 AND c.day = d::date
ORDER BY d"""

# Columns PATCH may set; the statement is built from these names only.
PATCHABLE = (
    "url",
    "redirect_type",
    "expires_at",
    "expired_url",
    "forward_query",
    "tags",
    "disabled",
)


def generate_code(reserved: frozenset[str]) -> str:
    """7 characters of ``[A-Za-z0-9]`` from ``secrets`` (62^7, about 3.5e12 codes)."""
    while True:
        code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
        if code.lower() not in reserved:
            return code


def _row_json(code: str, link: NewLink) -> dict[str, Any]:
    return {
        "code": code,
        "url": link.url,
        "redirect_type": link.redirect_type,
        "expires_at": link.expires_at.isoformat() if link.expires_at else None,
        "expired_url": link.expired_url,
        "forward_query": link.forward_query,
        "tags": list(link.tags),
        "disabled": link.disabled,
    }


async def insert_links(
    pg: asyncpg.Pool,
    account_id: int,
    links: Sequence[NewLink],
    reserved: frozenset[str],
    generate: Callable[[frozenset[str]], str] = generate_code,
) -> list[asyncpg.Record | Problem]:
    """Insert each link on its own (one statement per round); return a row or a problem per link.

    ``ON CONFLICT (code) DO NOTHING`` is the collision check: a taken custom code is a 409, a
    taken generated code gets a fresh one in the next round (no exception, no aborted batch).
    """
    results: list[asyncpg.Record | Problem | None] = [None] * len(links)
    pending: dict[str, int] = {}
    for index, link in enumerate(links):
        if link.code is None:
            continue
        if link.code in pending:
            results[index] = Problem(409, f"code {link.code!r} appears twice in this request")
        else:
            pending[link.code] = index
    generated = [i for i, link in enumerate(links) if link.code is None]
    for _ in range(CODE_ATTEMPTS):
        for index in generated:
            code = generate(reserved)
            while code in pending:
                code = generate(reserved)
            pending[code] = index
        if not pending:
            break
        # In request order, so that ids (and list order) follow the order the client sent.
        rows = [
            _row_json(code, links[index])
            for code, index in sorted(pending.items(), key=lambda p: p[1])
        ]
        inserted = await pg.fetch(_INSERT, account_id, orjson.dumps(rows).decode())
        for row in inserted:
            results[pending.pop(row["code"])] = row
        generated = [index for code, index in pending.items() if links[index].code is None]
        for code, index in list(pending.items()):
            if links[index].code is not None:
                results[index] = Problem(
                    409,
                    f"code {code!r} is taken; choose another, or omit code to get a generated one",
                )
        pending = {}
    for index in generated:
        results[index] = Problem(503, "could not find a free code; retry the request")
    return [result for result in results if result is not None]


async def fetch_link(pg: asyncpg.Pool, account_id: int, code: str) -> asyncpg.Record | None:
    return await pg.fetchrow(_SELECT_ONE, account_id, code)


async def update_link(
    pg: asyncpg.Pool, account_id: int, code: str, values: dict[str, Any]
) -> asyncpg.Record | None:
    """Set the given columns; ``None`` when the account has no such live link."""
    names = [name for name in PATCHABLE if name in values]
    assignments = ", ".join(f"{name} = ${n}" for n, name in enumerate(names, start=3))
    sql = f"""
WITH l AS (
    UPDATE links SET {assignments}, updated_at = now()
    WHERE account_id = $1 AND code = $2 AND deleted_at IS NULL
    RETURNING *)
SELECT {_WITH_TOTALS} FROM l LEFT JOIN link_click_totals t ON t.link_id = l.id"""
    args = [list(values[name]) if name == "tags" else values[name] for name in names]
    return await pg.fetchrow(sql, account_id, code, *args)


async def delete_link(pg: asyncpg.Pool, account_id: int, code: str) -> bool:
    status: str = await pg.execute(_DELETE, account_id, code)
    return status.endswith(" 1")


async def list_links(
    pg: asyncpg.Pool, account_id: int, limit: int, before_id: int | None, tag: str | None
) -> list[asyncpg.Record]:
    """Newest first; ``before_id`` is the id of the last link of the previous page."""
    return list(await pg.fetch(_SELECT_PAGE, account_id, before_id or MAX_ID, tag, limit))


async def daily_clicks(
    pg: asyncpg.Pool, link_id: int, first: date, last: date
) -> list[asyncpg.Record]:
    """One row per day from ``first`` to ``last``, zeros where nothing was counted."""
    return list(await pg.fetch(_DAILY, link_id, first, last))
