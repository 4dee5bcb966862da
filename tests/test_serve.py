"""``linkedge edge``: Granian in place of the command, graceful stop, respawn, metrics directory."""

from __future__ import annotations

import itertools
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from linkedge.embedded import free_port
from linkedge.serve import granian_argv, multiproc_dir
from linkedge.settings import Settings
from tests.conftest import Edge, Process, wait_http


def children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_every_worker_after_its_lifespan_shutdown(
    start_edge: Callable[..., Edge], sig: int
) -> None:
    edge = start_edge(workers=2, LOG_LEVEL="INFO")
    wait_until(lambda: len(children(edge.process.pid)) >= 2)
    workers = children(edge.process.pid)
    os.kill(edge.process.pid, sig)  # the command's own pid: it is Granian now (exec)
    assert edge.process.proc.wait(30) == 0
    assert not any(alive(pid) for pid in workers)
    assert edge.process.output().count('"msg":"edge worker stopped"') == 2


def test_a_killed_worker_is_respawned(
    start_edge: Callable[..., Edge], make_link: Callable[..., str]
) -> None:
    edge = start_edge(workers=1)
    code = make_link("https://example.org/respawn")
    wait_until(lambda: len(children(edge.process.pid)) == 1)
    (worker,) = children(edge.process.pid)
    os.kill(worker, signal.SIGKILL)
    wait_until(lambda: bool(children(edge.process.pid) - {worker}), timeout=30)

    def serves() -> bool:
        try:
            return httpx.get(f"{edge.url}/{code}", timeout=2).status_code == 302
        except httpx.HTTPError:
            return False

    wait_until(serves, timeout=30)


def test_metrics_directory_is_wiped_and_redirects_are_counted(
    linkedge_process: Callable[..., Process], make_link: Callable[..., str], tmp_path: Path
) -> None:
    prom = tmp_path / "prom"
    prom.mkdir()
    (prom / "counter_99999.db").write_bytes(b"stale samples of an earlier run")
    port = free_port()
    proc = linkedge_process(
        "edge", PORT=str(port), EDGE_WORKERS="1", PROMETHEUS_MULTIPROC_DIR=str(prom)
    )
    wait_http(f"http://127.0.0.1:{port}/healthz", proc)
    assert not (prom / "counter_99999.db").exists()
    code = make_link()
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        for _ in range(3):
            assert client.get(f"/{code}").status_code == 302

        def counted() -> bool:
            text = client.get("/metrics").text
            return 'linkedge_redirects_total{status="302"} 3.0' in text

        wait_until(counted)
        assert 'linkedge_link_lookups_total{tier="local"} 2.0' in client.get("/metrics").text


def test_granian_flags_follow_the_settings(tmp_path: Path) -> None:
    settings = Settings(host="0.0.0.0", port=8123, edge_workers=3, log_level="WARNING")
    argv = granian_argv(settings, tmp_path / "log.json")
    flags = dict(itertools.pairwise(argv))
    assert flags["--interface"] == "asgi" and flags["--factory"] == "edge.app:create_app"
    assert flags["--host"] == "0.0.0.0" and flags["--port"] == "8123" and flags["--workers"] == "3"
    assert flags["--loop"] == "uvloop" and flags["--http"] == "1"
    assert {"--no-ws", "--respawn-failed-workers", "--no-access-log"} <= set(argv)
    assert multiproc_dir(Settings(port=8123)).name == "linkedge-prometheus-edge-8123"


@pytest.mark.parametrize(("encoder", "hot"), [("auto", "c"), ("python", "python")])
def test_each_worker_says_which_encoder_and_redirect_path_it_runs(
    start_edge: Callable[..., Edge], encoder: str, hot: str
) -> None:
    from edge import clickencoder

    if encoder == "auto" and clickencoder._clickfast is None:
        pytest.skip("edge._clickfast not built here")
    edge = start_edge(workers=1, CLICK_ENCODER=encoder)
    kind = "c" if encoder == "auto" else "python"
    wait_until(lambda: '"msg":"edge worker started"' in edge.process.output())
    line = next(
        line for line in edge.process.output().splitlines() if '"edge worker started"' in line
    )
    assert f'"encoder":"{kind}"' in line and f'"hot_path":"{hot}"' in line
    metrics = httpx.get(f"{edge.url}/metrics").text
    assert f'linkedge_build_info{{encoder="{kind}",hot_path="{hot}",version=' in metrics
