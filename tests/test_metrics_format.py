"""Every process's /metrics passes `promtool check metrics` (names, units, help, types): a real
scrape of a real edge (multiprocess mode, two workers), aggregator and analytics process."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from conftest import Account, Edge, Process, wait_http

from linkedge.embedded import free_port

# On PATH, or unpacked into the venv by `make test` (from Debian's prometheus package).
PROMTOOL = shutil.which("promtool") or shutil.which(
    "promtool", path=str(Path(sys.executable).parent)
)
pytestmark = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not found: `make test` unpacks it (Debian package prometheus) into the venv",
)


def promtool_check(exposition: str) -> str:
    """promtool's findings on one scrape; empty when it has nothing to say."""
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, "check", "metrics"],
        input=exposition,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    findings = (result.stdout + result.stderr).strip()
    assert result.returncode == 0 or findings, (
        f"promtool exited {result.returncode} without saying why"
    )
    return findings


def scrape(url: str) -> str:
    response = httpx.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


def test_edge_metrics(start_edge: Callable[..., Edge], account: Callable[..., Account]) -> None:
    edge = start_edge(workers=2)
    owner = account()
    with edge.client(headers=owner.headers) as client:
        # Some traffic first, so that labelled series (statuses, tiers, routes) have samples.
        created = client.post("/api/v1/links", json={"url": "https://example.com/metrics-format"})
        assert created.status_code == 201
        code = created.json()["code"]
        for _ in range(3):
            assert client.get(f"/{code}").status_code == 302
        assert client.get("/no-such-code-here").status_code == 404
        assert client.get("/api/v1/links/no-such-code-here").status_code == 404
    exposition = scrape(edge.url)
    assert "linkedge_build_info" in exposition
    assert promtool_check(exposition) == ""


def test_aggregator_metrics(linkedge_process: Callable[..., Process]) -> None:
    port = free_port()
    proc = linkedge_process(
        "aggregator", AGGREGATOR_METRICS_PORT=str(port), AGGREGATE_INTERVAL_S="0.1"
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/healthz", proc)
    exposition = scrape(url)
    assert "linkedge_" in exposition
    assert promtool_check(exposition) == ""


def test_analytics_metrics(linkedge_process: Callable[..., Process], tmp_path: Path) -> None:
    port = free_port()
    proc = linkedge_process(
        "analytics",
        ANALYTICS_PORT=str(port),
        CLICKHOUSE_URL=f"chdb://{tmp_path / 'clickhouse'}",
        VISITOR_SALT_SECRET="metrics-format-test",
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/healthz", proc, timeout=60)
    exposition = scrape(url)
    assert "linkedge_" in exposition
    assert promtool_check(exposition) == ""


def test_promtool_catches_a_bad_name() -> None:
    """The check itself works: a counter without _total is reported."""
    bad = "# HELP requests Requests.\n# TYPE requests counter\nrequests 1\n"
    assert "_total" in promtool_check(bad)
