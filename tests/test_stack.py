"""``linkedge up``: the whole stack from nothing, in a temporary LINKEDGE_HOME, as a real subprocess.

These tests start their own embedded Redis and Postgres through ``up`` (not the session stores), the
edge, the aggregator and analytics, then check what a person would: run.env works, a link created
with the printed key redirects, SIGTERM leaves no process behind, a second run keeps the key.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
import redis
from conftest import ROOT, Process, Stores, run

from linkedge import apikeys, procgroup
from linkedge.demo import DEMO_CODE, DEMO_TARGET, ensure_demo
from linkedge.embedded import free_port
from linkedge.runstate import read_env_file, write_env_file

STORE_VARS = (
    "REDIS_URL",
    "DATABASE_URL",
    "CLICKHOUSE_URL",
    "ANALYTICS_URL",
    "VISITOR_SALT_SECRET",
    "ANALYTICS_TOKEN",
)


def up_env(home: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LINKEDGE_", "PROMETHEUS_", "CLICK_")) and k not in STORE_VARS
    }
    env.update(
        LINKEDGE_HOME=str(home),
        PORT=str(free_port()),
        EDGE_WORKERS="1",
        ANALYTICS_PORT="0",
        AGGREGATOR_METRICS_PORT="0",
        LOG_LEVEL="WARNING",
    )
    env.update(extra)
    return env


def groups_alive(pgids: list[int]) -> dict[int, list[int]]:
    """The live (or zombie) processes of each process group, from /proc."""
    found: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        pgrp = int(stat.rsplit(")", 1)[1].split()[2])
        if pgrp in pgids:
            found.setdefault(pgrp, []).append(int(entry.name))
    return found


def wait_gone(pgids: list[int], timeout: float = 20.0) -> dict[int, list[int]]:
    deadline = time.monotonic() + timeout
    left = groups_alive(pgids)
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = groups_alive(pgids)
    return left


class Up:
    """One ``linkedge up`` run; every pid it reports is remembered and killed at teardown if still there."""

    def __init__(self, home: Path, log: Path, **env: str) -> None:
        self.home = home
        self.process = Process(
            [sys.executable, "-m", "linkedge.cli", "up"], up_env(home, **env), log
        )
        self.pids: set[int] = {self.process.pid}

    def wait_ready(self, timeout: float = 150.0) -> dict[str, int]:
        """Wait for up.json to say this run is ready; return the pids of what it started."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.proc.poll() is not None:
                raise AssertionError(
                    f"up exited {self.process.proc.returncode}:\n{self.process.output()[-6000:]}"
                )
            try:
                state = json.loads((self.home / "up.json").read_text())
            except (OSError, ValueError):
                state = {}
            if state.get("pid") == self.process.pid:
                self.pids.update(state["processes"].values())
                if state["ready"]:
                    return dict(state["processes"])
            time.sleep(0.2)
        raise AssertionError(f"up not ready within {timeout}s:\n{self.process.output()[-6000:]}")

    def env(self) -> dict[str, str]:
        return read_env_file(self.home / "run.env")

    def exit_code(self, timeout: float = 60.0) -> int:
        return self.process.proc.wait(timeout)

    def kill_leftovers(self) -> None:
        self.process.stop()
        for pgid in self.pids:
            procgroup.signal_group(pgid, signal.SIGKILL)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One LINKEDGE_HOME for this module, so the second-run test reuses what the first one left."""
    return tmp_path_factory.mktemp("linkedge-home")


@pytest.fixture
def start_up(tmp_path: Path) -> Iterator[type[Up]]:
    runs: list[Up] = []

    class Started(Up):
        def __init__(self, home: Path, **env: str) -> None:
            super().__init__(home, tmp_path / f"up-{len(runs)}.log", **env)
            runs.append(self)

    yield Started
    for up in runs:
        up.kill_leftovers()


def eventually(read: Callable[[], object], expected: object, timeout: float = 20.0) -> object:
    """Poll ``read`` until it returns ``expected`` or ``timeout`` passes; return its last value."""
    deadline = time.monotonic() + timeout
    value = read()
    while value != expected and time.monotonic() < deadline:
        time.sleep(0.5)
        value = read()
    return value


def environ_of(pid: int) -> dict[str, str]:
    """The environment ``pid`` was started with, from /proc."""
    raw = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    return dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)


def db_fetchval(dsn: str, sql: str, *args: object) -> object:
    async def go() -> object:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            return await conn.fetchval(sql, *args)
        finally:
            await conn.close()

    return run(go())


@pytest.mark.timeout(300)
def test_up_runs_the_stack_and_sigterm_stops_every_process(home: Path, start_up: type[Up]) -> None:
    up = start_up(home)
    pids = up.wait_ready()
    assert set(pids) == {"redis", "postgres", "edge", "aggregator", "analytics"}
    env = up.env()
    ports = json.loads((home / "ports.json").read_text())

    # Embedded stores on loopback, on ports picked free (never the standard ones), state under home.
    assert env["REDIS_URL"] == f"redis://127.0.0.1:{ports['redis']}/0"
    assert env["DATABASE_URL"].startswith(f"postgresql://postgres@127.0.0.1:{ports['postgres']}/")
    assert {ports["redis"], ports["postgres"]}.isdisjoint({6379, 5432})
    assert env["CLICKHOUSE_URL"] == f"chdb://{home / 'clickhouse'}"
    assert (home / "run.env").stat().st_mode & 0o077 == 0
    assert len(env["VISITOR_SALT_SECRET"]) >= 32
    assert len(env["ANALYTICS_TOKEN"]) >= 32  # secrets.token_urlsafe(32): 43 characters
    for app in ("edge", "analytics"):
        assert environ_of(pids[app]).get("ANALYTICS_TOKEN") == env["ANALYTICS_TOKEN"], app
    with redis.Redis.from_url(env["REDIS_URL"]) as client:
        assert client.ping()
    assert db_fetchval(env["DATABASE_URL"], "SELECT count(*) FROM schema_migrations") > 0
    assert httpx.get(f"{env['ANALYTICS_URL']}/healthz", timeout=5).status_code == 200

    # The printed key is the one in run.env, and a link created with it redirects.
    assert env["LINKEDGE_API_KEY"] in up.process.output()
    dashboard = f"{env['LINKEDGE_URL']}/dashboard/"  # printed next to the key, and served
    assert f"dashboard  {dashboard}" in up.process.output()
    assert httpx.get(dashboard, timeout=10).status_code == 200
    with httpx.Client(base_url=env["LINKEDGE_URL"], timeout=10, follow_redirects=False) as edge:
        demo = edge.get(f"/{DEMO_CODE}")
        assert demo.status_code == 302 and demo.headers["location"] == DEMO_TARGET
        code = f"stack-{uuid.uuid4().hex[:8]}"
        created = edge.post(
            "/api/v1/links",
            json={"url": "https://example.org/from-up", "code": code},
            headers={"Authorization": f"Bearer {env['LINKEDGE_API_KEY']}"},
        )
        assert created.status_code == 201, created.text
        followed = edge.head(f"/{code}")
        assert (
            followed.status_code == 302
            and followed.headers["location"] == "https://example.org/from-up"
        )

    # The aggregator and analytics run too: the clicks reach Postgres and ClickHouse.
    browser = {
        "User-Agent": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
    }
    for _ in range(3):
        assert (
            httpx.get(f"{env['LINKEDGE_URL']}/{DEMO_CODE}", headers=browser, timeout=10).status_code
            == 302
        )
    link_id = db_fetchval(env["DATABASE_URL"], "SELECT id FROM links WHERE code = $1", DEMO_CODE)
    expected = {"postgres": 4, "clickhouse": 4}  # the GET above and these three
    counts = lambda: {
        "postgres": db_fetchval(
            env["DATABASE_URL"],
            "SELECT coalesce(max(clicks), 0) FROM link_click_totals WHERE link_id = $1",
            link_id,
        ),
        "clickhouse": httpx.get(
            f"{env['ANALYTICS_URL']}/internal/link-counts",
            params={"link_id": link_id},
            timeout=10,
            headers={"Authorization": f"Bearer {env['ANALYTICS_TOKEN']}"},
        )
        .json()
        .get("distinct_clicks"),
    }
    assert eventually(counts, expected) == expected

    # run.env sourced by a shell gives the other commands what they need.
    shell = subprocess.run(
        [
            "bash",
            "-c",
            (
                f"set -a; . {home / 'run.env'}; set +a; "
                f'{sys.executable} -c \'import os; print(os.environ["DATABASE_URL"], os.environ["LINKEDGE_URL"])\''
            ),
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    assert shell.stdout.split() == [env["DATABASE_URL"], env["LINKEDGE_URL"]]
    reconciled = subprocess.run(
        [
            "bash",
            "-c",
            f"set -a; . {home / 'run.env'}; set +a; {sys.executable} -m linkedge.cli reconcile",
        ],
        check=False,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=up_env(home),
        timeout=120,
    )
    assert reconciled.returncode == 0, reconciled.stdout + reconciled.stderr

    up.process.proc.send_signal(signal.SIGTERM)
    assert up.exit_code() == 0, up.process.output()[-4000:]
    assert wait_gone([up.process.pid, *pids.values()]) == {}
    assert not (home / "up.json").exists()


@pytest.mark.timeout(400)
def test_second_up_reuses_key_and_ports_and_a_dead_child_stops_the_stack(
    home: Path, start_up: type[Up]
) -> None:
    if not (home / "run.env").exists():  # run alone: make the first run here
        first = start_up(home)
        first.wait_ready()
        first.process.proc.send_signal(signal.SIGTERM)
        assert first.exit_code() == 0
    before = read_env_file(home / "run.env")

    up = start_up(home)
    pids = up.wait_ready()
    after = up.env()
    assert after["LINKEDGE_API_KEY"] == before["LINKEDGE_API_KEY"]
    assert after["VISITOR_SALT_SECRET"] == before["VISITOR_SALT_SECRET"]
    assert after["ANALYTICS_TOKEN"] == before["ANALYTICS_TOKEN"]
    assert environ_of(pids["analytics"]).get("ANALYTICS_TOKEN") == before["ANALYTICS_TOKEN"]
    assert after["REDIS_URL"] == before["REDIS_URL"]  # the saved ports were free, so reused
    assert after["DATABASE_URL"] == before["DATABASE_URL"]
    assert (
        db_fetchval(
            after["DATABASE_URL"],
            "SELECT count(*) FROM api_keys k JOIN accounts a ON a.id = k.account_id WHERE a.name = 'demo'",
        )
        == 1
    )

    # A second `up` on the same state refuses to start and leaves the running one alone.
    intruder = start_up(home)
    assert intruder.exit_code() == 1
    assert "another `linkedge up`" in intruder.process.output()
    assert up.process.proc.poll() is None

    # A child that dies takes the whole stack down, loudly, with nothing left running.
    os.kill(pids["aggregator"], signal.SIGKILL)
    assert up.exit_code() == 1
    assert "`linkedge aggregator`" in up.process.output()
    assert wait_gone([up.process.pid, *pids.values()]) == {}


def test_up_refuses_a_taken_port_by_name(tmp_path: Path, start_up: type[Up]) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        up = start_up(tmp_path / "home", PORT=str(port))
        assert up.exit_code() == 1
    assert f"port {port} on 127.0.0.1 is taken: set PORT" in up.process.output()
    assert not (tmp_path / "home" / "postgres").exists()  # it failed before starting anything


def test_ensure_demo_reuses_a_valid_key_and_replaces_a_revoked_one(stores: Stores) -> None:
    key = run(ensure_demo(stores.database_url, None))
    assert run(ensure_demo(stores.database_url, key)) == key
    assert run(ensure_demo(stores.database_url, "lk_not-a-key-we-made")) not in {
        key,
        "lk_not-a-key-we-made",
    }

    async def revoke() -> None:
        conn = await asyncpg.connect(stores.database_url, timeout=10)
        try:
            await apikeys.revoke_key(conn, key)
        finally:
            await conn.close()

    run(revoke())
    assert run(ensure_demo(stores.database_url, key)) != key


def test_run_env_round_trips_through_a_shell(tmp_path: Path) -> None:
    values = {
        "PLAIN": "redis://127.0.0.1:1234/0",
        "ODD": "postgresql://u:p a$s'&;@h/db",
        "EMPTY": "",
    }
    path = tmp_path / "run.env"
    write_env_file(path, values)
    assert read_env_file(path) == values
    shell = subprocess.run(
        ["bash", "-c", f'set -a; . {path}; set +a; printf \'%s\\n\' "$PLAIN" "$ODD" "$EMPTY"'],
        capture_output=True,
        text=True,
        check=True,
    )
    assert shell.stdout.split("\n")[:3] == [values["PLAIN"], values["ODD"], ""]
