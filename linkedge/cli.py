"""The ``linkedge`` command.

Each subcommand names the function that runs it as ``module:function``; the module is imported only
when that subcommand runs, so ``linkedge migrate`` does not load the edge or the ClickHouse engine.
Every runner takes ``(settings, args)`` and returns an exit code.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import sys
from collections.abc import Callable, Sequence

from linkedge import apikeys
from linkedge.logs import configure_logging
from linkedge.settings import ConfigError, Settings


def _add_key_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    create = sub.add_parser(
        "create-key", help="create an API key (and its account); prints it once"
    )
    create.add_argument("--account", required=True, help="account name; created when new")
    create.add_argument(
        "--scopes",
        nargs="+",
        default=list(apikeys.DEFAULT_SCOPES),
        metavar="SCOPE",
        help=f"scopes to grant (default: all of {' '.join(apikeys.SCOPES)})",
    )
    create.set_defaults(target="linkedge.cli:create_key")
    revoke = sub.add_parser(
        "revoke-key", help="revoke an API key, given the key or its lk_xxxxxx prefix"
    )
    revoke.add_argument("key")
    revoke.set_defaults(target="linkedge.cli:revoke_key")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="linkedge", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    commands = {
        "up": (
            "linkedge.stack:run",
            "start the whole stack (embedded stores where URLs are unset)",
        ),
        "edge": ("linkedge.serve:run", "serve the edge app with Granian"),
        "migrate": ("linkedge.cli:migrate", "apply pending Postgres and ClickHouse migrations"),
        "aggregator": ("aggregator.main:run", "move click counters from Redis to Postgres"),
        "analytics": ("analytics.main:run", "stream click events from Redis into ClickHouse"),
        "reconcile": ("analytics.reconcile:run", "compare Postgres and ClickHouse counts"),
    }
    for name, (target, help_text) in commands.items():
        cmd = sub.add_parser(name, help=help_text)
        cmd.set_defaults(target=target)
        if name == "reconcile":
            cmd.add_argument("--days", type=int, default=7, help="how many recent days to compare")
        if name == "migrate":
            cmd.add_argument("--postgres-only", action="store_true", help="skip ClickHouse")
    _add_key_commands(sub)
    return parser


def _resolve(target: str) -> Callable[[Settings, argparse.Namespace], int]:
    module, _, func = target.partition(":")
    runner: Callable[[Settings, argparse.Namespace], int] = getattr(
        importlib.import_module(module), func
    )
    return runner


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"linkedge: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    try:
        return _resolve(args.target)(settings, args)
    except ConfigError as exc:
        print(f"linkedge {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def migrate(settings: Settings, args: argparse.Namespace) -> int:
    from linkedge.migrate import migrate_clickhouse, migrate_postgres

    settings.require("database_url")
    applied = asyncio.run(migrate_postgres(settings.database_url.get()))
    logging.getLogger("linkedge.migrate").info("postgres: %d migration(s) applied", len(applied))
    if settings.clickhouse_url and not getattr(args, "postgres_only", False):
        done = migrate_clickhouse(settings.clickhouse_url.get())
        logging.getLogger("linkedge.migrate").info("clickhouse: %d migration(s) applied", len(done))
    return 0


def create_key(settings: Settings, args: argparse.Namespace) -> int:
    import asyncpg

    settings.require("database_url")

    async def go() -> tuple[int, str]:
        conn = await asyncpg.connect(settings.database_url.get(), timeout=30)
        try:
            return await apikeys.create_key(conn, args.account, args.scopes)
        finally:
            await conn.close()

    try:
        key_id, key = asyncio.run(go())
    except apikeys.UnknownScopeError as exc:
        print(f"linkedge create-key: {exc}", file=sys.stderr)
        return 2
    print(key)
    print(
        f"key id {key_id} for account {args.account!r}; it is shown only this once", file=sys.stderr
    )
    return 0


def revoke_key(settings: Settings, args: argparse.Namespace) -> int:
    import asyncpg

    settings.require("database_url")

    async def go() -> int:
        conn = await asyncpg.connect(settings.database_url.get(), timeout=30)
        try:
            return await apikeys.revoke_key(conn, args.key)
        finally:
            await conn.close()

    count = asyncio.run(go())
    if count == 0:
        print("linkedge revoke-key: no active key matches", file=sys.stderr)
        return 1
    print(f"revoked {count} key(s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
