"""helm/linkedge/dashboards: the Grafana dashboards the chart ships (dashboards.enabled).

- linkedge-clicks.json (grafana-clickhouse-datasource): every panel's SQL, with the plugin's macros
  and the dashboard's variables expanded as Grafana would, runs against the real ClickHouse engine
  (chDB, the project's schema applied by ``migrate_clickhouse``) over a known set of clicks, and
  returns the columns its panel reads and the counts those clicks make.
- linkedge-operations.json (Prometheus): every expression is valid PromQL (``promtool check rules``
  on a rules file made of them) and names only metrics the processes export; the alert rules too.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from aggregator import metrics as aggregator_metrics
from analytics import metrics as analytics_metrics
from analytics.enrich import agent, referrer_host
from edge import metrics as edge_metrics

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = ROOT / "helm" / "linkedge" / "dashboards"
RULES = ROOT / "helm" / "linkedge" / "alerts" / "linkedge-rules.yaml"
CLICKS = json.loads((DASHBOARDS / "linkedge-clicks.json").read_text())
OPERATIONS = json.loads((DASHBOARDS / "linkedge-operations.json").read_text())
PROMTOOL = shutil.which("promtool") or shutil.which(
    "promtool", path=str(Path(sys.executable).parent)
)


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel that queries, rows' nested panels included."""
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            yield from panels({"panels": panel.get("panels", [])})
        else:
            yield panel


def variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dashboard["templating"]["list"]}


# --- Structure -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dashboard", "plugin"),
    [(CLICKS, "grafana-clickhouse-datasource"), (OPERATIONS, "prometheus")],
    ids=["clicks", "operations"],
)
def test_dashboard_is_provisionable(dashboard: dict[str, Any], plugin: str) -> None:
    """Loadable by the Grafana sidecar as is: no ``__inputs`` to fill in, a datasource variable of
    the right plugin that every panel and query goes through, unique ids, a 24-column grid."""
    assert "__inputs" not in dashboard
    assert dashboard["uid"].startswith("linkedge-") and dashboard["title"]
    datasource = variables(dashboard)["datasource"]
    assert (datasource["type"], datasource["query"]) == ("datasource", plugin)
    ref = {"type": plugin, "uid": "${datasource}"}
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    titles = [p["title"] for p in panels(dashboard)]
    assert len(titles) == len(set(titles)), "panel titles name the panels in tests"
    for panel in panels(dashboard):
        assert panel["datasource"] == ref, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == ref, panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
    for variable in variables(dashboard).values():
        if variable["type"] == "query":
            assert variable["datasource"] == ref


# --- ClickHouse: the macro expander ----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GrafanaQuery:
    """What Grafana and the ClickHouse plugin put into a panel's SQL."""

    start: datetime.datetime
    end: datetime.datetime
    interval_s: int
    accounts: tuple[int, ...]

    def expand(self, sql: str) -> str:
        """``sql`` as the plugin sends it (grafana/clickhouse-datasource pkg/macros/macros.go);
        a macro, variable or format it does not know is an error, not left in place."""
        frm, to = int(self.start.timestamp()), int(self.end.timestamp())

        def macro(match: re.Match[str]) -> str:
            name, args = match.group(1), match.group(2)
            column = args.strip() if args is not None else None
            if name == "timeFilter" and column:
                return f"{column} >= toDateTime({frm}) AND {column} <= toDateTime({to})"
            if name == "timeInterval" and column:
                return f"toStartOfInterval(toDateTime({column}), INTERVAL {self.interval_s} second)"
            if name in ("fromTime", "toTime") and column is None:
                return f"toDateTime({frm if name == 'fromTime' else to})"
            if name == "interval_s" and column is None:
                return str(self.interval_s)
            raise AssertionError(f"macro the expander does not know: {match.group(0)}")

        def variable(match: re.Match[str]) -> str:
            name, fmt = match.group(1) or match.group(3), match.group(2)
            if name == "account" and fmt == "csv":
                return ",".join(str(a) for a in self.accounts)
            raise AssertionError(f"variable or format not expanded: {match.group(0)}")

        sql = re.sub(r"\$__(\w+)(?:\(([^()]*)\))?", macro, sql)
        sql = re.sub(r"\$\{(\w+)(?::(\w+))?\}|\$(\w+)", variable, sql)
        assert "$" not in sql, sql
        return sql


RANGE = GrafanaQuery(
    start=datetime.datetime(2026, 3, 2, tzinfo=datetime.UTC),
    end=datetime.datetime(2026, 3, 3, tzinfo=datetime.UTC),
    interval_s=3600,
    accounts=(1,),
)


def test_expander_matches_the_plugins_macros() -> None:
    expanded = RANGE.expand(
        "SELECT $__timeInterval(ts) AS t FROM clicks WHERE $__timeFilter(ts) AND "
        "account_id IN (${account:csv}) AND ts < $__toTime AND ts >= $__fromTime -- $__interval_s"
    )
    assert expanded == (
        "SELECT toStartOfInterval(toDateTime(ts), INTERVAL 3600 second) AS t FROM clicks WHERE "
        "ts >= toDateTime(1772409600) AND ts <= toDateTime(1772496000) AND account_id IN (1) AND "
        "ts < toDateTime(1772496000) AND ts >= toDateTime(1772409600) -- 3600"
    )
    for unknown in ("$__timeFilter_ms(ts)", "$account", "${account}", "${other:csv}"):
        with pytest.raises(AssertionError):
            RANGE.expand(f"SELECT 1 WHERE {unknown}")


# --- ClickHouse: the clicks the panels are run over -----------------------------------------

IPHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148"
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
HN = "https://news.ycombinator.com/item?id=1"
SPRING_HN = {"utm_source": "hn", "utm_medium": "social", "utm_campaign": "spring"}
SPRING_ADS = {"utm_source": "google", "utm_medium": "cpc", "utm_campaign": "spring"}


@dataclasses.dataclass(frozen=True)
class Seed:
    at: str  # 2026-03-02 HH:MM UTC, or a full ISO time
    account: int
    link: int
    code: str
    ip: str
    ua: str
    referer: str = ""
    utm: dict[str, str] = dataclasses.field(default_factory=dict)
    bot: str = ""
    again: bool = False  # inserted a second time, in another batch (a replay the token missed)

    @property
    def ts_ms(self) -> int:
        text = self.at if "T" in self.at else f"2026-03-02T{self.at}:00+00:00"
        return int(datetime.datetime.fromisoformat(text).timestamp() * 1000)


SEEDS = [
    # Account 1 inside the range: 6 human clicks (3 US iPhone, 2 GB desktop, 1 AU desktop) and 3
    # bot clicks (2 Googlebot, 1 HEAD from the iPhone), on two links; 3 human visitor hashes.
    Seed("10:00", 1, 101, "spring-sale", "8.8.8.8", IPHONE, HN, SPRING_HN),
    Seed("10:05", 1, 101, "spring-sale", "8.8.8.8", IPHONE, HN, SPRING_HN, again=True),
    Seed("11:30", 1, 101, "spring-sale", "8.8.8.8", IPHONE, HN, SPRING_HN),
    Seed("10:10", 1, 101, "spring-sale", "81.2.69.142", CHROME),
    Seed("12:00", 1, 101, "spring-sale", "81.2.69.142", CHROME),
    Seed("13:00", 1, 102, "docs", "1.1.1.1", CHROME, "https://www.google.com/", SPRING_ADS),
    Seed("10:20", 1, 101, "spring-sale", "8.8.8.8", GOOGLEBOT, bot="crawler", again=True),
    Seed("14:00", 1, 101, "spring-sale", "8.8.8.8", GOOGLEBOT, bot="crawler"),
    Seed("10:30", 1, 102, "docs", "8.8.8.8", IPHONE, bot="head"),
    # Outside what the panels select: the day before, and another account.
    Seed("2026-03-01T23:59:00+00:00", 1, 101, "spring-sale", "81.2.69.142", CHROME),
    Seed("10:00", 2, 201, "other", "133.1.1.1", CHROME),
]


def _clickhouse_child(tmp_path: Path, queries: dict[str, str]) -> dict[str, Any]:
    """Apply the schema to a fresh chDB path, insert SEEDS as analytics would (enriched rows, one
    insert per batch), run ``queries``; in a child process, since chDB holds one data path per
    process. Per query: column names and types and the rows, or the error."""
    script = r"""
import json, sys
from analytics.enrich import COLUMNS, Enricher
from linkedge.clickhouse import connect
from linkedge.events import Click, ClickIds
from linkedge.migrate import migrate_clickhouse

job = json.load(sys.stdin)
client = connect(job["url"])
migrate_clickhouse(job["url"], client)
ids, enricher = ClickIds(), Enricher(b"dashboard-test")
clicks = [
    Click(id=ids.new(s["ts_ms"]), ts_ms=s["ts_ms"], link_id=s["link"], account_id=s["account"],
          code=s["code"], target="https://example.com/" + s["code"], ip=s["ip"],
          user_agent=s["ua"], referer=s["referer"], utm=s["utm"], bot=s["bot"])
    for s in job["seeds"]
]
rows = [enricher.row(c) for c in clicks]
client.insert("clicks", rows, column_names=list(COLUMNS))
again = [row for row, s in zip(rows, job["seeds"]) if s["again"]]
client.insert("clicks", again, column_names=list(COLUMNS))
out = {"row_count": client.query("SELECT count() FROM clicks").result_rows[0][0]}
for key, sql in job["queries"].items():
    try:
        result = client.query(sql)
    except Exception as exc:
        out[key] = {"error": str(exc)}
        continue
    out[key] = {
        "columns": list(result.column_names),
        "types": [t.name for t in result.column_types],
        "rows": [[v if isinstance(v, (int, float, str)) else str(v) for v in row]
                 for row in result.result_rows],
    }
print(json.dumps(out))
"""
    job = {
        "url": f"chdb://{tmp_path / 'clickhouse'}",
        "seeds": [{**dataclasses.asdict(s), "ts_ms": s.ts_ms} for s in SEEDS],
        "queries": queries,
    }
    result = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps(job),
        capture_output=True,
        text=True,
        check=False,
        timeout=170,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _sql(panel: dict[str, Any]) -> str:
    (target,) = panel["targets"]
    assert target["editorType"] == "sql"
    return str(target["rawSql"])


BOTH_ACCOUNTS = dataclasses.replace(RANGE, accounts=(1, 2))


@pytest.fixture(scope="module")
def answers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    queries = {"account variable": variables(CLICKS)["account"]["query"]}
    for panel in panels(CLICKS):
        queries[panel["title"]] = RANGE.expand(_sql(panel))
        queries[f"{panel['title']} (accounts 1, 2)"] = BOTH_ACCOUNTS.expand(_sql(panel))
    return _clickhouse_child(tmp_path_factory.mktemp("dashboards"), queries)


def _table(answer: dict[str, Any]) -> list[dict[str, Any]]:
    assert "error" not in answer, answer.get("error")
    return [dict(zip(answer["columns"], row, strict=True)) for row in answer["rows"]]


NUMERIC = re.compile(r"^(U?Int\d+|Float\d+|Decimal.*)$")


def _columns_used(panel: dict[str, Any]) -> list[str]:
    """The fields the panel's options and overrides name."""
    named = [
        o["matcher"]["options"]
        for o in panel["fieldConfig"]["overrides"]
        if o["matcher"]["id"] == "byName"
    ]
    named += [s["displayName"] for s in panel["options"].get("sortBy", [])]
    if "xField" in panel["options"]:
        named.append(panel["options"]["xField"])
    return named


@pytest.mark.parametrize("title", [p["title"] for p in panels(CLICKS)])
def test_clickhouse_panel_returns_the_columns_it_uses(title: str, answers: dict[str, Any]) -> None:
    (panel,) = [p for p in panels(CLICKS) if p["title"] == title]
    for key in (title, f"{title} (accounts 1, 2)"):
        answer = answers[key]
        assert "error" not in answer, f"{key}: {answer.get('error')}"
        columns = dict(zip(answer["columns"], answer["types"], strict=True))
        assert answer["rows"], f"{key}: no rows over the seeded clicks"
        assert set(_columns_used(panel)) <= set(columns), (key, columns)
        (target,) = panel["targets"]
        if panel["type"] == "timeseries":
            # The plugin's time series format: a DateTime column, then numeric series.
            assert target["format"] == 0
            first, *series = answer["columns"]
            assert first == "time" and columns["time"].startswith("DateTime"), columns
            assert series and all(NUMERIC.match(columns[c]) for c in series), columns
        else:
            assert target["format"] == 1
        fields = panel["options"].get("reduceOptions", {}).get("fields")
        if fields:  # stat and pie chart: the regex picks the numeric field shown
            shown = [c for c in columns if re.search(fields.strip("/"), c)]
            assert shown and all(NUMERIC.match(columns[c]) for c in shown), (fields, columns)


def test_seeded_replay_is_in_the_table_twice(answers: dict[str, Any]) -> None:
    """The panels below count 9 clicks of account 1 out of 13 rows: uniqExact, not count()."""
    assert answers["row_count"] == len(SEEDS) + sum(s.again for s in SEEDS) == 13


def test_account_variable_lists_the_accounts(answers: dict[str, Any]) -> None:
    assert [r["account_id"] for r in _table(answers["account variable"])] == [1, 2]


def _one(answers: dict[str, Any], title: str) -> Any:
    (row,) = _table(answers[title])
    (value,) = row.values()
    return value


def test_totals_count_each_click_once_for_the_selected_accounts(answers: dict[str, Any]) -> None:
    assert _one(answers, "Clicks") == 9
    assert _one(answers, "Human clicks") == 6
    assert _one(answers, "Bot clicks") == 3
    # Human clicks' hashes: iPhone@US, desktop@GB, desktop@AU (not Googlebot, nor the HEAD).
    assert _one(answers, "Visitors") == 3
    assert _one(answers, "Clicks (accounts 1, 2)") == 10


def _by(
    answers: dict[str, Any], title: str, key: str | tuple[str, ...]
) -> dict[Any, dict[str, Any]]:
    rows = _table(answers[title])
    keys = (key,) if isinstance(key, str) else key
    out = {tuple(r.pop(k) for k in keys) if len(keys) > 1 else r.pop(keys[0]): r for r in rows}
    assert len(out) == len(rows), f"{title}: {key} repeats"
    return out


def test_time_series_add_up_and_fall_in_the_interval(answers: dict[str, Any]) -> None:
    rows = _table(answers["Clicks: humans and bots"])
    assert [r["time"][:19] for r in rows] == [f"2026-03-02 {h}:00:00" for h in (10, 11, 12, 13, 14)]
    assert [(r["humans"], r["bots"]) for r in rows] == [(3, 2), (1, 0), (1, 0), (1, 0), (0, 1)]
    # Human visitor hashes per hour: 10h iPhone and GB, then one each.
    assert [r["visitors"] for r in _table(answers["Visitors over time"])] == [2, 1, 1, 1]


def test_top_links(answers: dict[str, Any]) -> None:
    links = _by(answers, "Top links", "code")
    assert {code: (r["clicks"], r["humans"], r["visitors"]) for code, r in links.items()} == {
        "spring-sale": (7, 5, 2),
        "docs": (2, 1, 1),
    }
    assert list(links) == ["spring-sale", "docs"]
    assert links["docs"]["target"] == "https://example.com/docs"


def test_countries(answers: dict[str, Any]) -> None:
    countries = _by(answers, "Countries", "country")
    assert {c: (r["humans"], r["bots"]) for c, r in countries.items()} == {
        "US": (3, 3),
        "GB": (2, 0),
        "AU": (1, 0),
    }
    assert "JP" in _by(answers, "Countries (accounts 1, 2)", "country")


def test_devices_browsers_and_systems_of_human_clicks(answers: dict[str, Any]) -> None:
    iphone, chrome = agent(IPHONE), agent(CHROME)
    for title, column, iphone_value, chrome_value in (
        ("Devices", "device", iphone.device_type, chrome.device_type),
        ("Browsers", "browser", iphone.browser, chrome.browser),
        ("Operating systems", "os", iphone.os, chrome.os),
    ):
        assert iphone_value != chrome_value and "" not in (iphone_value, chrome_value)
        counts = {k: r["clicks"] for k, r in _by(answers, title, column).items()}
        assert counts == {iphone_value: 3, chrome_value: 3}, title


def test_referrers(answers: dict[str, Any]) -> None:
    referrers = _by(answers, "Referrers", "referrer")
    assert {k: (r["clicks"], r["visitors"]) for k, r in referrers.items()} == {
        referrer_host(HN): (3, 1),
        "(direct)": (2, 1),
        referrer_host("https://www.google.com/"): (1, 1),
    }


def test_utm_campaigns(answers: dict[str, Any]) -> None:
    utm = _by(answers, "UTM campaigns", ("utm_source", "utm_medium", "utm_campaign"))
    assert {k: (r["clicks"], r["visitors"]) for k, r in utm.items()} == {
        ("hn", "social", "spring"): (3, 1),
        ("google", "cpc", "spring"): (1, 1),
    }


def test_bots(answers: dict[str, Any]) -> None:
    reasons = _by(answers, "Bot clicks by reason", "bot_reason")
    assert {k: r["clicks"] for k, r in reasons.items()} == {"crawler": 2, "head": 1}
    crawlers = _by(answers, "Crawlers", "crawler")
    assert {k: r["clicks"] for k, r in crawlers.items()} == {"Googlebot": 2, "unknown": 1}


# --- Prometheus ------------------------------------------------------------------------------

# What Grafana puts in for its own variables, and for the dashboard's (All = the allValue).
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "30s",
    "$__range": "6h",
    "$namespace": ".*",
}


def _expressions() -> dict[str, str]:
    found = {}
    for panel in panels(OPERATIONS):
        for target in panel["targets"]:
            expr = target["expr"]
            for name, value in sorted(GRAFANA_VARIABLES.items(), key=lambda kv: -len(kv[0])):
                expr = expr.replace(name, value)
            assert "$" not in expr, f"{panel['title']}: unknown variable in {target['expr']}"
            found[f"linkedge_dashboard:panel{panel['id']}:{target['refId']}"] = expr
    return found


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not found: `make test` puts it in the venv")
def test_every_prometheus_panel_expression_is_valid_promql(tmp_path: Path) -> None:
    expressions = _expressions()
    assert len(expressions) >= 30
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [{"record": k, "expr": v} for k, v in expressions.items()],
            }
        ]
    }
    path = tmp_path / "dashboard-expressions.yaml"
    path.write_text(yaml.safe_dump(rules))
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, "check", "rules", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(expressions)} rules found" in result.stdout


def _exported_series() -> set[str]:
    """The series names the three processes' metrics expose."""
    suffixes = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}
    names = set()
    for module in (edge_metrics, aggregator_metrics, analytics_metrics):
        for metric in vars(module).values():
            if isinstance(metric, MetricWrapperBase):
                names |= {metric._name + s for s in suffixes[metric._type]}
    return names


def test_dashboard_and_alerts_name_only_exported_metrics() -> None:
    exported = _exported_series()
    assert "linkedge_redirects_total" in exported
    assert "linkedge_click_flush_events_bucket" in exported
    used = set()
    for expr in _expressions().values():
        used |= set(re.findall(r"\blinkedge_[a-z_]+\b", expr))
    used.discard("linkedge_dashboard")
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            used |= set(re.findall(r"\blinkedge_[a-z_]+\b", rule["expr"]))
    assert used and used <= exported, used - exported
    # The panels the issue asks for are there.
    for metric in (
        "linkedge_redirects_total",
        "linkedge_link_lookups_total",
        "linkedge_click_flush_errors_total",
        "linkedge_clicks_spooled_total",
        "linkedge_clicks_dropped_total",
        "linkedge_aggregator_lag_seconds",
        "linkedge_analytics_pending",
        "linkedge_analytics_oldest_pending_age_seconds",
        "linkedge_api_requests_total",
    ):
        assert any(metric in e for e in _expressions().values()), metric
