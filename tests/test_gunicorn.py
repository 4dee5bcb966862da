"""gunicorn.conf.py serves the edge app with gunicorn's ASGI worker, multiprocess metrics."""

from __future__ import annotations

import os
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from conftest import Account, Db, Process, Stores, wait_http

from linkedge.embedded import free_port

pytest.importorskip("gunicorn", reason="gunicorn is a dev dependency: pip install -e '.[dev]'")


class Gunicorn:
    def __init__(self, process: Process, url: str, metrics_dir: Path) -> None:
        self.process = process
        self.url = url
        self.metrics_dir = metrics_dir

    def worker_pids(self) -> set[int]:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text()
        return {int(pid) for pid in children.split()}


def _wait_until(
    check: Callable[[], bool], what: str, timeout: float = 20.0, log: Path | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-4000:] if log else ""
    raise AssertionError(f"not within {timeout}s: {what}\n{tail}")


@pytest.fixture
def gunicorn(stores: Stores, tmp_path: Path) -> Iterator[Gunicorn]:
    port = free_port()
    metrics_dir = tmp_path / "prom"
    metrics_dir.mkdir()
    (metrics_dir / "counter_12345.db").write_bytes(b"stale")  # left by an earlier run: must go
    env = stores.env(
        PORT=str(port),
        EDGE_WORKERS="2",
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
        LOG_LEVEL="INFO",
    )
    process = Process(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"], env, tmp_path / "gunicorn.log"
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/healthz", process)
        # One worker answering is not all of them: a SIGTERM that reaches a worker still booting
        # is lost (gunicorn installs the worker's handlers late) and costs all of graceful_timeout.
        _wait_until(
            lambda: process.log.read_text().count("ASGI server listening") >= 2,
            "both workers up",
            timeout=60,
            log=process.log,
        )
        yield Gunicorn(process, url, metrics_dir)
    finally:
        process.stop()


def _insert_link(db: Db, owner: Account, url: str) -> str:
    code = f"g{uuid.uuid4().hex[:10]}"
    db.execute(
        "INSERT INTO links (account_id, code, url) SELECT id, $2, $3 FROM accounts WHERE name = $1",
        owner.name,
        code,
        url,
    )
    return code


def test_gunicorn_serves_a_redirect(
    gunicorn: Gunicorn, db: Db, account: Callable[..., Account]
) -> None:
    code = _insert_link(db, account(), "https://example.com/from-gunicorn?x=1")
    with httpx.Client(base_url=gunicorn.url, follow_redirects=False, timeout=10) as client:
        response = client.get(f"/{code}")
        assert response.status_code == 302
        assert response.headers["location"] == "https://example.com/from-gunicorn?x=1"
        assert client.get(f"/{code}-unknown").status_code == 404
        metrics = client.get("/metrics")
    assert metrics.status_code == 200
    assert "linkedge_build_info" in metrics.text


def test_starting_wipes_stale_metric_files(gunicorn: Gunicorn) -> None:
    assert not (gunicorn.metrics_dir / "counter_12345.db").exists()
    assert any(gunicorn.metrics_dir.glob("*.db")), "workers write their metric files here"


def test_dead_worker_gauges_are_dropped_and_worker_replaced(gunicorn: Gunicorn) -> None:
    pids = gunicorn.worker_pids()
    assert len(pids) == 2
    victim = min(pids)
    live_file = gunicorn.metrics_dir / f"gauge_livesum_{victim}.db"
    _wait_until(live_file.exists, f"{live_file.name} written by the worker")

    os.kill(victim, signal.SIGKILL)
    _wait_until(
        lambda: not live_file.exists(), "child_exit removed the dead worker's live gauge file"
    )
    _wait_until(
        lambda: len(gunicorn.worker_pids() - {victim}) == 2, "gunicorn started a replacement worker"
    )
    _wait_until(
        lambda: gunicorn.process.log.read_text().count("ASGI server listening") >= 3,
        "replacement up",
        timeout=60,
        log=gunicorn.process.log,
    )
    wait_http(f"{gunicorn.url}/healthz", gunicorn.process)


def test_sigterm_shuts_down_cleanly(gunicorn: Gunicorn) -> None:
    assert gunicorn.process.stop() == 0
    assert "Traceback" not in gunicorn.process.log.read_text()
