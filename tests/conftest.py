"""Test harness: real Redis, real PostgreSQL and the real ClickHouse engine, started here.

The stores run once per test session on free ports in a temporary directory and are stopped at the
end; nothing on the machine's own 6379/5432 is used. Tests isolate themselves by creating their own
account (``account`` factory) and codes rather than by wiping shared state, so a session-wide edge
server with a warm cache stays correct between tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import redis

from linkedge import apikeys, procgroup
from linkedge.embedded import EmbeddedPostgres, EmbeddedRedis, free_port, redis_server_binary
from linkedge.migrate import migrate_postgres
from linkedge.settings import Secret, Settings

ROOT = Path(__file__).resolve().parent.parent
ANALYTICS_TOKEN = "test-analytics-token"


@dataclasses.dataclass
class Stores:
    redis: EmbeddedRedis
    postgres: EmbeddedPostgres
    clickhouse_dir: Path
    tmp: Path

    @property
    def redis_url(self) -> str:
        return self.redis.url

    @property
    def database_url(self) -> str:
        return self.postgres.url

    @property
    def clickhouse_url(self) -> str:
        return f"chdb://{self.clickhouse_dir}"

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for a linkedge subprocess pointed at these stores."""
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("LINKEDGE_", "PROMETHEUS_"))
        }
        env.update(
            REDIS_URL=self.redis_url,
            DATABASE_URL=self.database_url,
            CLICKHOUSE_URL=self.clickhouse_url,
            CLICK_SPOOL_DIR=str(self.tmp / f"spool-{uuid.uuid4().hex[:8]}"),
            LOG_LEVEL="WARNING",
            # Every test edge shares this Redis and the client 127.0.0.1, so the per-IP key-lookup
            # bucket would couple unrelated tests (each new key is one lookup). The test of that
            # limit sets its own values and client addresses.
            AUTH_LOOKUP_BURST="1000000",
            # The analytics port's /internal/* routes refuse every request without it.
            ANALYTICS_TOKEN=ANALYTICS_TOKEN,
        )
        env.update(extra)
        return env


def run(coro: Any) -> Any:
    """Run a coroutine from a synchronous test."""
    return asyncio.run(coro)


@pytest.fixture(scope="session")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stores]:
    tmp = tmp_path_factory.mktemp("stores")
    rds = EmbeddedRedis(tmp / "redis", persist=False)
    pg = EmbeddedPostgres(tmp / "postgres")
    try:
        rds.start()
        pg.start()
        run(migrate_postgres(pg.url))
        yield Stores(redis=rds, postgres=pg, clickhouse_dir=tmp / "clickhouse", tmp=tmp)
    finally:
        rds.stop()
        pg.stop()


@pytest.fixture
def settings(stores: Stores, tmp_path: Path) -> Settings:
    return Settings(
        redis_url=Secret(stores.redis_url),
        database_url=Secret(stores.database_url),
        clickhouse_url=Secret(stores.clickhouse_url),
        click_spool_dir=str(tmp_path / "spool"),
    )


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """A Redis of the test module's own, for tests whose shard keys and streams must not mix with
    other modules' clicks in the session Redis."""
    server = EmbeddedRedis(tmp_path_factory.mktemp("module-redis"), persist=False).start()
    yield server
    server.stop()


@pytest.fixture
def rds(own_redis: EmbeddedRedis) -> Iterator[redis.Redis]:
    """A client of ``own_redis``, emptied before each test."""
    client = redis.Redis.from_url(own_redis.url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def redis_client(stores: Stores) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(stores.redis_url)
    yield client
    client.close()


class Db:
    """Synchronous one-shot queries against the test Postgres, for assertions."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    async def _with_conn(self, method: str, sql: str, *args: Any) -> Any:
        conn = await asyncpg.connect(self.dsn, timeout=10)
        try:
            return await getattr(conn, method)(sql, *args)
        finally:
            await conn.close()

    def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        return run(self._with_conn("fetch", sql, *args))  # type: ignore[no-any-return]

    def fetchval(self, sql: str, *args: Any) -> Any:
        return run(self._with_conn("fetchval", sql, *args))

    def execute(self, sql: str, *args: Any) -> str:
        return run(self._with_conn("execute", sql, *args))  # type: ignore[no-any-return]


@pytest.fixture
def db(stores: Stores) -> Db:
    return Db(stores.database_url)


@dataclasses.dataclass
class Account:
    name: str
    key: str
    key_id: int

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@pytest.fixture
def account(stores: Stores) -> Callable[..., Account]:
    """Factory: a new account with a key of the given scopes (all by default)."""

    def make(scopes: tuple[str, ...] = apikeys.SCOPES, name: str | None = None) -> Account:
        account_name = name or f"acct-{uuid.uuid4().hex[:12]}"

        async def go() -> tuple[int, str]:
            conn = await asyncpg.connect(stores.database_url, timeout=10)
            try:
                return await apikeys.create_key(conn, account_name, scopes)
            finally:
                await conn.close()

        key_id, key = run(go())
        return Account(name=account_name, key=key, key_id=key_id)

    return make


class Process:
    """A linkedge command run as a subprocess in its own process group."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.args = args
        self.log = log
        self._out = open(log, "ab")  # noqa: SIM115 -- open for the process's life, closed by stop()
        self.proc = procgroup.spawn(args, env=env, cwd=ROOT, output=self._out)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            procgroup.signal_group(self.proc.pid, sig)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, wait, then SIGKILL the whole group; return the exit code."""
        code = procgroup.stop(self.proc, timeout)
        self._out.close()
        return code

    def output(self) -> str:
        if not self._out.closed:
            self._out.flush()
        return self.log.read_text(errors="replace")


def wait_http(url: str, proc: Process, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.proc.poll() is not None:
            raise RuntimeError(
                f"{proc.args} exited {proc.proc.returncode}:\n{proc.output()[-4000:]}"
            )
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not up within {timeout}s:\n{proc.output()[-4000:]}")


def wait_workers(proc: Process, workers: int, timeout: float = 30.0) -> None:
    """Wait until Granian logged every worker as started: /healthz answers as soon as one is, and a
    signal that reaches a worker still booting is lost (it is killed after the kill timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.output().count('"msg":"Started worker-') >= workers:
            return
        if proc.proc.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError(f"not all {workers} edge workers started:\n{proc.output()[-4000:]}")


@dataclasses.dataclass
class Edge:
    url: str
    process: Process
    workers: int

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, follow_redirects=False, timeout=10, **kwargs)


@contextlib.contextmanager
def analytics_pipeline(
    stores: Stores, redis_url: str, tmp: Path, *, aggregator: bool = True, **env: str
) -> Iterator[tuple[Edge, str]]:
    """Analytics (its own embedded ClickHouse under ``tmp``), the aggregator when asked, and a
    one-worker edge that reaches analytics, on free ports, against ``redis_url`` and the test
    Postgres; yields the edge and analytics' URL, and stops them all on exit."""
    analytics_port, edge_port = free_port(), free_port()
    analytics_url = f"http://127.0.0.1:{analytics_port}"
    base = stores.env(
        REDIS_URL=redis_url,
        CLICKHOUSE_URL=f"chdb://{tmp / 'clickhouse'}",
        ANALYTICS_URL=analytics_url,
        ANALYTICS_PORT=str(analytics_port),
        AGGREGATOR_METRICS_PORT="0",
        PORT=str(edge_port),
        EDGE_WORKERS="1",
        LOG_LEVEL="INFO",
        **env,
    )
    processes: list[Process] = []

    def start(name: str, **extra: str) -> Process:
        command = [sys.executable, "-m", "linkedge.cli", name]
        processes.append(Process(command, {**base, **extra}, tmp / f"{name}.log"))
        return processes[-1]

    try:
        analytics = start("analytics")
        if aggregator:
            start("aggregator")
        # The edge's own metrics directory, which it wipes at start: a process that shared it
        # would lose its files mid-write.
        edge_process = start("edge", PROMETHEUS_MULTIPROC_DIR=str(tmp / "prom"))
        wait_http(f"{analytics_url}/healthz", analytics, timeout=60)
        edge = Edge(url=f"http://127.0.0.1:{edge_port}", process=edge_process, workers=1)
        wait_http(f"{edge.url}/healthz", edge_process)
        wait_workers(edge_process, 1)
        yield edge, analytics_url
    finally:
        for process in processes:
            process.stop()


@pytest.fixture
def linkedge_process(stores: Stores, tmp_path: Path) -> Iterator[Callable[..., Process]]:
    """Factory: run ``linkedge SUBCOMMAND`` against the test stores; stopped at teardown."""
    started: list[Process] = []

    def start(*subcommand: str, **env: str) -> Process:
        log = tmp_path / f"{subcommand[0]}-{len(started)}.log"
        proc = Process([sys.executable, "-m", "linkedge.cli", *subcommand], stores.env(**env), log)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def start_edge(linkedge_process: Callable[..., Process], tmp_path: Path) -> Callable[..., Edge]:
    """Factory: a real Granian edge server with ``workers`` workers on a free port."""

    def start(workers: int = 2, **env: str) -> Edge:
        port = free_port()
        env.setdefault("LOG_LEVEL", "INFO")  # Granian logs "Started worker-N" at info
        proc = linkedge_process(
            "edge",
            PORT=str(port),
            EDGE_WORKERS=str(workers),
            PROMETHEUS_MULTIPROC_DIR=str(tmp_path / f"prom-{port}"),
            **env,
        )
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/healthz", proc)
        wait_workers(proc, workers)
        return Edge(url=url, process=proc, workers=workers)

    return start


@pytest.fixture(scope="session")
def shared_edge(stores: Stores, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    """One edge server with two workers for the whole session (API and redirect tests)."""
    tmp = tmp_path_factory.mktemp("shared-edge")
    port = free_port()
    env = stores.env(
        PORT=str(port),
        EDGE_WORKERS="2",
        PROMETHEUS_MULTIPROC_DIR=str(tmp / "prom"),
        CLICK_SPOOL_DIR=str(tmp / "spool"),
        LOG_LEVEL="INFO",
    )
    proc = Process([sys.executable, "-m", "linkedge.cli", "edge"], env, tmp / "edge.log")
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/healthz", proc)
        wait_workers(proc, 2)
        yield Edge(url=url, process=proc, workers=2)
    finally:
        proc.stop()


@pytest.fixture
def edge(shared_edge: Edge) -> Iterator[httpx.Client]:
    with shared_edge.client() as client:
        yield client


# ---- Redis Cluster ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A one-node Redis Cluster owning all 16384 slots, one per test module."""
    data = tmp_path_factory.mktemp("redis-cluster")
    port = free_port()
    args = [
        redis_server_binary(), "--bind", "127.0.0.1", "--port", str(port), "--dir", str(data),
        "--cluster-enabled", "yes", "--cluster-config-file", str(data / "nodes.conf"),
        "--cluster-port", str(free_port()),  # else port + 10000, which may not exist
        "--save", "", "--appendonly", "no", "--logfile", str(data / "redis.log"),
    ]  # fmt: skip
    proc = procgroup.spawn(args)
    try:
        client: Any = _wait_for_node(port, proc, data / "redis.log")  # execute_command is untyped
        client.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        deadline = time.monotonic() + 20
        while b"cluster_state:ok" not in client.execute_command("CLUSTER", "INFO"):
            assert time.monotonic() < deadline, "single-node cluster did not become ok"
            time.sleep(0.1)
        client.close()
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        procgroup.stop(proc, 10)


def _wait_for_node(port: int, proc: subprocess.Popen[bytes], log: Path) -> redis.Redis:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text(errors="replace")
        client = redis.Redis(port=port)
        try:
            client.ping()
            return client
        except redis.ConnectionError:
            client.close()
            time.sleep(0.05)
    raise AssertionError(f"cluster-mode redis-server did not start:\n{log.read_text()}")


@pytest.fixture
def account_id(account: Callable[..., Account], db: Db) -> int:
    acct = account()
    return int(db.fetchval("SELECT account_id FROM api_keys WHERE id = $1", acct.key_id))


@pytest.fixture
def make_link(db: Db, account_id: int) -> Callable[..., str]:
    """Factory: insert a link row directly (an account's, random code unless given); its code."""

    def make(url: str = "https://example.org/landing", **fields: Any) -> str:
        code = fields.pop("code", None) or "t" + uuid.uuid4().hex[:12]
        columns = {"account_id": account_id, "code": code, "url": url, **fields}
        names = ", ".join(columns)
        params = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
        db.execute(f"INSERT INTO links ({names}) VALUES ({params})", *columns.values())
        return code

    return make
