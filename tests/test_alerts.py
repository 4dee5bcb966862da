"""helm/linkedge/alerts/linkedge-rules.yaml under ``promtool test rules``: for every alert, input
series that make it fire (with the labels and text it fires with) and series that must not.

The rule file is the one the chart ships in its PrometheusRule (tests/test_helm.py checks that
the rendered rule groups are this file's). A new alert without cases here fails
``test_every_alert_has_firing_and_quiet_cases``.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

RULES = (
    Path(__file__).resolve().parent.parent / "helm" / "linkedge" / "alerts" / "linkedge-rules.yaml"
)
# On PATH, or unpacked into the venv by `make test` (from Debian's prometheus package).
PROMTOOL = shutil.which("promtool") or shutil.which(
    "promtool", path=str(Path(sys.executable).parent)
)
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not found: `make test` unpacks it (Debian package prometheus) into the venv",
)
NS = {"namespace": "links"}


@dataclasses.dataclass
class Case:
    """Series sampled every minute from 0m; at ``at`` the alert fires exactly as ``fires``."""

    name: str
    series: dict[str, str]
    at: str
    fires: list[dict[str, Any]] = dataclasses.field(default_factory=list)


def fired(description: str, **labels: str) -> dict[str, Any]:
    return {"labels": labels, "description": description}


DROPPED = (
    "Clicks were dropped in links in the last 10 minutes: worker memory and the spool were both "
    "full (Redis unreachable too long), or a click could not be built. Dropped clicks are lost for "
    "good. See linkedge_clicks_dropped_total{reason}."
)

CASES: dict[str, list[Case]] = {
    "LinkedgeClicksDropped": [
        Case(
            "a counter that grows",
            {
                'linkedge_clicks_dropped_total{namespace="links",pod="e1",reason="spool_full"}': "0 0 0 5 40 40"
            },
            "5m",
            [fired(DROPPED, **NS)],
        ),
        Case(
            "a reason's first drop: the series appears above 0",
            {
                'linkedge_clicks_dropped_total{namespace="links",pod="e2",reason="invalid"}': "_x5 1x10"
            },
            "8m",
            [fired(DROPPED, **NS)],
        ),
        Case(
            "drops long ago, none since",
            {
                'linkedge_clicks_dropped_total{namespace="links",pod="e1",reason="spool_full"}': "7x30",
                'linkedge_clicks_dropped_total{namespace="links",pod="e1",reason="error"}': "0x30",
            },
            "25m",
        ),
        Case(
            "no drop series at all",
            {'linkedge_clicks_spooled_total{namespace="links"}': "0x20"},
            "15m",
        ),
    ],
    "LinkedgeClickFlushErrors": [
        Case(
            "flushes failing for 20 minutes",
            {'linkedge_click_flush_errors_total{namespace="links",pod="e1"}': "0+6x30"},
            "20m",
            [
                fired(
                    "Click flushes to Redis have been failing in links for 10 minutes (100m/s). "
                    "Clicks wait in worker memory and then in the spool.",
                    **NS,
                )
            ],
        ),
        Case(
            "a blip of failed flushes, then none",
            {'linkedge_click_flush_errors_total{namespace="links",pod="e1"}': "0x5 3x30"},
            "20m",
        ),
        Case(
            "failing for less than the 10 minutes",
            {'linkedge_click_flush_errors_total{namespace="links",pod="e1"}': "0x10 0+6x10"},
            "16m",
        ),
    ],
    "LinkedgeClicksSpooled": [
        Case(
            "clicks spooled two minutes ago",
            {
                'linkedge_clicks_spooled_total{namespace="links",pod="e1"}': "0 0 0 120 120",
                'linkedge_clicks_spooled_total{namespace="links",pod="e2"}': "0x5",
            },
            "4m",
            [
                fired(
                    "120 clicks went to the local spool in links in the last 10 minutes: Redis "
                    "was not taking them and worker memory was full. They are replayed when Redis "
                    "answers; the spool is an emptyDir and is lost with its pod.",
                    **NS,
                )
            ],
        ),
        Case(
            "spooled half an hour ago",
            {'linkedge_clicks_spooled_total{namespace="links",pod="e1"}': "0 50x40"},
            "30m",
        ),
    ],
    "LinkedgeAggregatorLag": [
        Case(
            "the only aggregator stuck",
            {'linkedge_aggregator_lag_seconds{namespace="links",pod="a1"}': "1+60x15"},
            "12m",
            [
                fired(
                    "No aggregator in links has finished a pass over the click shards for 12m 1s: "
                    "link click counts in Postgres are falling behind.",
                    **NS,
                )
            ],
        ),
        Case(
            "one aggregator stuck, another moving the counts",
            {
                'linkedge_aggregator_lag_seconds{namespace="links",pod="a1"}': "1+60x15",
                'linkedge_aggregator_lag_seconds{namespace="links",pod="a2"}': "1 0.5 1.2 1x12",
            },
            "12m",
        ),
        Case(
            "a slow pass, under five minutes",
            {'linkedge_aggregator_lag_seconds{namespace="links",pod="a1"}': "1x3 1+60x4 1x10"},
            "12m",
        ),
    ],
    "LinkedgeAnalyticsFallingBehind": [
        Case(
            "an entry read and never acknowledged",
            {
                'linkedge_analytics_oldest_pending_age_seconds{namespace="links",pod="n1",shard="0",group="analytics"}': "0+60x15",
                'linkedge_analytics_oldest_pending_age_seconds{namespace="links",pod="n1",shard="1",group="analytics"}': "0x15",
            },
            "12m",
            [
                fired(
                    "The oldest click-stream entry consumer group analytics has read but not "
                    "acknowledged in links is 12m 0s old.",
                    group="analytics",
                    **NS,
                )
            ],
        ),
        Case(
            "entries acknowledged within seconds",
            {
                'linkedge_analytics_oldest_pending_age_seconds{namespace="links",pod="n1",shard="0",group="analytics"}': "0 2 0 1 0 3 0 0 1 0x10",
            },
            "15m",
        ),
    ],
    "LinkedgeAnalyticsBacklogGrowing": [
        Case(
            "two replicas report a backlog that keeps growing",
            {
                'linkedge_analytics_undelivered{namespace="links",pod="n1",shard="0",group="analytics"}': "0+100x40",
                'linkedge_analytics_undelivered{namespace="links",pod="n2",shard="0",group="analytics"}': "0+100x40",
                'linkedge_analytics_undelivered{namespace="links",pod="n1",shard="1",group="analytics"}': "0+50x40",
                'linkedge_analytics_undelivered{namespace="links",pod="n2",shard="1",group="analytics"}': "0+50x40",
            },
            "30m",
            [
                fired(
                    "4.5k stream entries are waiting for consumer group analytics in links, and "
                    "the backlog has grown for 15 minutes. Add analytics replicas or check "
                    "ClickHouse insert times.",
                    group="analytics",
                    **NS,
                )
            ],
        ),
        Case(
            "a large backlog being worked off",
            {
                'linkedge_analytics_undelivered{namespace="links",pod="n1",shard="0",group="analytics"}': "20000-300x40",
            },
            "30m",
        ),
        Case(
            "a steady small backlog",
            {
                'linkedge_analytics_undelivered{namespace="links",pod="n1",shard="0",group="analytics"}': "0+10x40",
            },
            "30m",
        ),
    ],
    "LinkedgeClickHouseDown": [
        Case(
            "ClickHouse calls failing",
            {
                'linkedge_analytics_clickhouse_up{namespace="links",pod="n1"}': "1 1 0x10",
                'linkedge_analytics_clickhouse_up{namespace="links",pod="n2"}': "1x12",
            },
            "10m",
            [
                fired(
                    "The last ClickHouse call of n1 in links failed, for 5 minutes. Click events "
                    "wait in the Redis streams.",
                    pod="n1",
                    **NS,
                )
            ],
        ),
        Case(
            "a failed call now and then",
            {
                'linkedge_analytics_clickhouse_up{namespace="links",pod="n1"}': "1 0 1 1 0 1 1 1 0 1 1 1"
            },
            "10m",
        ),
    ],
    "LinkedgeEdge5xx": [
        Case(
            "redirects answering 503",
            {
                'linkedge_redirects_total{namespace="links",pod="e1",status="302"}': "0+950x20",
                'linkedge_redirects_total{namespace="links",pod="e1",status="503"}': "0+50x20",
                'linkedge_api_requests_total{namespace="links",pod="e1",route="/api/v1/links",method="GET",status="200"}': "0x20",
            },
            "10m",
            [
                fired(
                    "5% of the edge's redirects and API requests in links answered 5xx over the "
                    "last 5 minutes (a store unreachable).",
                    **NS,
                )
            ],
        ),
        Case(
            "API answering 503, redirects fine",
            {
                'linkedge_redirects_total{namespace="links",pod="e1",status="302"}': "0+70x20",
                'linkedge_redirects_total{namespace="links",pod="e1",status="503"}': "0x20",
                'linkedge_api_requests_total{namespace="links",pod="e1",route="/api/v1/links",method="POST",status="503"}': "0+30x20",
            },
            "10m",
            [
                fired(
                    "30% of the edge's redirects and API requests in links answered 5xx over the "
                    "last 5 minutes (a store unreachable).",
                    **NS,
                )
            ],
        ),
        Case(
            "404s and a few 503s, under 1%",
            {
                'linkedge_redirects_total{namespace="links",pod="e1",status="302"}': "0+900x20",
                'linkedge_redirects_total{namespace="links",pod="e1",status="404"}': "0+300x20",
                'linkedge_redirects_total{namespace="links",pod="e1",status="503"}': "0+1x20",
                'linkedge_api_requests_total{namespace="links",pod="e1",route="/api/v1/links",method="GET",status="429"}': "0+100x20",
            },
            "10m",
        ),
    ],
    "LinkedgeProcessNotReady": [
        Case(
            "an analytics pod not ready for 15 minutes",
            {
                'kube_deployment_status_replicas_unavailable{namespace="links",deployment="linkedge-analytics",pod="ksm-0"}': "1x20",
                'kube_deployment_status_replicas_unavailable{namespace="links",deployment="linkedge-edge",pod="ksm-0"}': "0x20",
            },
            "15m",
            [
                fired(
                    "1 pod(s) of linkedge-analytics in links have not been ready for 10 minutes "
                    "(/readyz fails: Redis, Postgres or ClickHouse unreachable, or the pod cannot "
                    "start).",
                    deployment="linkedge-analytics",
                    **NS,
                )
            ],
        ),
        Case(
            "a rolling update, and another release's Deployment",
            {
                'kube_deployment_status_replicas_unavailable{namespace="links",deployment="linkedge-edge",pod="ksm-0"}': "0 1 1 1 0x20",
                'kube_deployment_status_replicas_unavailable{namespace="links",deployment="otherapp-edge",pod="ksm-0"}': "1x20",
            },
            "15m",
        ),
    ],
    "LinkedgeMetricsDown": [
        Case(
            "an analytics pod not answering /metrics",
            {
                'up{namespace="links",job="linkedge-analytics",pod="linkedge-analytics-1"}': "1 0x10",
                'up{namespace="links",job="linkedge-edge",pod="linkedge-edge-1"}': "1x10",
            },
            "8m",
            [
                fired(
                    "linkedge-analytics-1 (linkedge-analytics) in links has not answered /metrics "
                    "for 5 minutes: the process is down, or its port is unreachable.",
                    job="linkedge-analytics",
                    pod="linkedge-analytics-1",
                    **NS,
                )
            ],
        ),
        Case(
            "a missed scrape, and another release's target down",
            {
                'up{namespace="links",job="linkedge-edge",pod="linkedge-edge-1"}': "1 1 0 1 1 1 1 1 1 1",
                'up{namespace="links",job="otherapp-edge",pod="otherapp-edge-1"}': "0x10",
            },
            "8m",
        ),
    ],
}


def _rules() -> dict[str, dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"] if "alert" in rule}


def _test_file(alert: str, tmp_path: Path) -> Path:
    rule = _rules()[alert]
    groups = []
    for case in CASES[alert]:
        expected = [
            {
                "exp_labels": {**rule.get("labels", {}), **f["labels"]},
                "exp_annotations": {
                    "summary": rule["annotations"]["summary"],
                    "description": f["description"],
                },
            }
            for f in case.fires
        ]
        groups.append(
            {
                "name": f"{alert}: {case.name}",
                "interval": "1m",
                "input_series": [{"series": s, "values": v} for s, v in case.series.items()],
                "alert_rule_test": [
                    {"eval_time": case.at, "alertname": alert, "exp_alerts": expected}
                ],
            }
        )
    path = tmp_path / f"{alert}.test.yaml"
    path.write_text(
        yaml.safe_dump({"rule_files": [str(RULES)], "evaluation_interval": "1m", "tests": groups})
    )
    return path


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], capture_output=True, text=True, timeout=120, check=False
    )


@needs_promtool
def test_rule_file_is_valid() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_firing_and_quiet_cases() -> None:
    assert set(_rules()) == set(CASES)
    for alert, cases in CASES.items():
        assert any(c.fires for c in cases), f"{alert}: no case where it fires"
        assert any(not c.fires for c in cases), f"{alert}: no case where it stays quiet"


@needs_promtool
@pytest.mark.parametrize("alert", sorted(CASES))
def test_alert_fires_and_stays_quiet(alert: str, tmp_path: Path) -> None:
    result = promtool("test", "rules", str(_test_file(alert, tmp_path)))
    assert result.returncode == 0, result.stdout + result.stderr
