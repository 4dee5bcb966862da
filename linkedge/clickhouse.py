"""One way to open ClickHouse: ``chdb://PATH`` (the engine in-process) or ``http(s)://...``."""

from __future__ import annotations

from typing import Any

import clickhouse_connect


def connect(url: str, **kwargs: Any) -> Any:
    """A clickhouse-connect client for ``url``.

    An embedded ``chdb://`` engine allows one process per data path: the analytics process owns it
    while the stack runs, and other commands (reconcile) ask analytics over HTTP instead.
    """
    return clickhouse_connect.get_client(dsn=url, **kwargs)
