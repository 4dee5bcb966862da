"""The dashboard at /dashboard/: its files and headers, and the page itself in a real Chromium.

The browser tests run against a stack of this module's own: an edge (one worker, trusting
127.0.0.1's X-Forwarded-For so clicks come from known countries), analytics on an embedded
ClickHouse path of its own, and the aggregator, all on this module's Redis and the session's
Postgres. A known mix of clicks goes through the edge's redirect before the first test; the page's
numbers are compared with the API's answers to the same queries.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import re
import sys
import time
import tomllib
import uuid
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
import dashboard_browser
import httpx
import iptocc
import pytest
from conftest import ROOT, Process, Stores, wait_http
from dashboard_browser import screenshot, watch

from edge.api import dashboard
from edge.app import RESERVED
from linkedge import apikeys
from linkedge.embedded import EmbeddedRedis, free_port

browser = dashboard_browser.browser  # the module-scoped Chromium fixture
QUERY_ROUTE = "/api/v1/analytics/query"
CHROME_UA = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
IPHONE_UA = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1"
)
XSS_TAG = "<img src=x onerror=alert('tag')>"
XSS_TARGET = 'https://example.com/"><script>alert("target")</script>'
XSS_REFERRER = "https://evil.example/\"><img src=x onerror=alert('referrer')>"
XSS_UTM = "\"><script>alert('utm')</script>"
XSS_UA = "<script>alert('ua')</script> Mozilla/5.0"
GB, US, DE, FR = "81.2.69.142", "8.8.8.8", "5.6.7.8", "62.4.0.1"
ZONE = "Europe/Paris"  # the browser's timezone in these tests: the page must use it by default


# ---- files and headers (no browser) ----------------------------------------------------------
def test_every_dashboard_answer_has_the_security_headers_and_its_cache_policy(
    shared_edge: Any,
) -> None:
    with httpx.Client(base_url=shared_edge.url, timeout=10) as client:
        page = client.get("/dashboard/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert page.headers["cache-control"] == "no-cache"
        assets = re.findall(r'(?:href|src)="(/dashboard/assets/[^"]+)"', page.text)
        assert {a.rsplit("/", 1)[1] for a in assets} == {"app.css", "main.js"}
        answers = [page]
        for path in assets:
            asset = client.get(path)
            assert asset.status_code == 200, path
            assert asset.headers["cache-control"] == "public, max-age=31536000, immutable"
            assert asset.headers["content-type"].split(";")[0] in {"text/css", "text/javascript"}
            answers.append(asset)
        stale = client.get(assets[0].replace(dashboard.Dashboard().version, "0" * 16))
        missing = client.get("/dashboard/nothing-here")
        assert stale.status_code == missing.status_code == 404
        assert stale.headers["cache-control"] == "no-store"
        for answer in [*answers, stale, missing]:
            for name, value in dashboard.SECURITY_HEADERS.items():
                assert answer.headers.get(name) == value, (answer.url, name)
    csp = dashboard.CSP
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "frame-ancestors 'none'" in csp and "default-src 'self'" in csp


def test_a_changed_file_changes_every_asset_url(tmp_path: Path) -> None:
    for path in dashboard.ROOT.rglob("*"):
        if path.is_file():
            target = tmp_path / path.relative_to(dashboard.ROOT)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    before = dashboard.Dashboard(tmp_path)
    (tmp_path / "chart.js").write_bytes((tmp_path / "chart.js").read_bytes() + b"\n")
    after = dashboard.Dashboard(tmp_path)
    assert before.version != after.version
    assert (
        after.asset_base.encode() in after.index and before.asset_base.encode() not in after.index
    )


def test_the_page_never_builds_html_from_strings_and_has_no_inline_script_or_style() -> None:
    scripts = {p.name: p.read_text() for p in dashboard.ROOT.glob("*.js")}
    assert {"main.js", "api.js", "dom.js", "overview.js", "links.js", "chart.js"} <= set(scripts)
    for name, text in scripts.items():
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                     "new Function", "setAttribute(\"style\"", ".cssText"):  # fmt: skip
            assert sink not in text, (name, sink)
        for imported in re.findall(r'from "(\./[^"]+)"', text):
            assert (dashboard.ROOT / imported).is_file(), (name, imported)  # no other origin
        urls = set(re.findall(r"[a-z]+://[^\s\"'`]*", text)) - {"http://www.w3.org/2000/svg"}
        assert not urls, (name, urls)
    html = (dashboard.ROOT / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "inline script"
    assert not re.search(r"\sstyle=|<style", html), "inline style"
    assert not re.search(r"\son[a-z]+=", html), "inline event handler"
    for url in re.findall(r'(?:src|href|action)="([^"]*)"', html):  # nothing from elsewhere
        assert url.startswith(("{{assets}}/", "#", "data:")), url


def test_the_dashboard_files_are_package_data() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["edge"]
    for path in dashboard.ROOT.rglob("*"):
        if path.is_file():
            relative = path.relative_to(ROOT / "edge").as_posix()
            assert any(fnmatch(relative, pattern) for pattern in patterns), relative


def test_dashboard_without_a_slash_is_the_dashboard_not_a_short_code(shared_edge: Any) -> None:
    assert "dashboard" in RESERVED  # so no custom code can take it
    answer = httpx.get(f"{shared_edge.url}/dashboard", timeout=10)
    assert answer.status_code == 308
    assert answer.headers["location"] == "/dashboard/"


# ---- the stack and its clicks ----------------------------------------------------------------
@dataclasses.dataclass
class Key:
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def new_key(stores: Stores, scopes: tuple[str, ...] = apikeys.SCOPES) -> Key:
    """A new account's key. Run in a thread: Playwright's sync API owns this thread's loop."""

    async def go() -> str:
        conn = await asyncpg.connect(stores.database_url, timeout=10)
        try:
            _, key = await apikeys.create_key(conn, f"dash-{uuid.uuid4().hex[:10]}", scopes)
            return key
        finally:
            await conn.close()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return Key(pool.submit(asyncio.run, go()).result())


@dataclasses.dataclass
class Stack:
    url: str
    stores: Stores
    analytics_ready: str | None  # None, or why the analytics query API is not there

    def api(self, key: Key) -> httpx.Client:
        return httpx.Client(base_url=f"{self.url}/api/v1", headers=key.headers, timeout=30)

    def query(self, key: Key, **body: Any) -> dict[str, Any]:
        with self.api(key) as client:
            answer = client.post("/analytics/query", json=body)
        assert answer.status_code == 200, answer.text
        return answer.json()  # type: ignore[no-any-return]

    def click(self, code: str, *, ip: str, ua: str, referer: str = "", query: str = "",
              method: str = "GET") -> None:  # fmt: skip
        headers = {"X-Forwarded-For": ip, "User-Agent": ua}
        if referer:
            headers["Referer"] = referer
        url = f"{self.url}/{code}" + (f"?{query}" if query else "")
        answer = httpx.request(method, url, headers=headers, timeout=10)
        assert answer.status_code == 302, (code, answer.status_code)


@pytest.fixture(scope="module")
def stack(
    stores: Stores, own_redis: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("dashboard-stack")
    analytics_port, edge_port = free_port(), free_port()
    common = {"REDIS_URL": own_redis.url, "CLICKHOUSE_URL": f"chdb://{tmp / 'clickhouse'}"}
    specs = {
        "analytics": {
            "ANALYTICS_PORT": str(analytics_port),
            "ANALYTICS_BLOCK_MS": "200",
            "VISITOR_SALT_SECRET": "dashboard-test",
        },
        "aggregator": {"AGGREGATOR_METRICS_PORT": "0"},
        "edge": {
            "PORT": str(edge_port),
            "EDGE_WORKERS": "1",
            "TRUSTED_PROXIES": "127.0.0.1",
            "ANALYTICS_URL": f"http://127.0.0.1:{analytics_port}",
            "RATE_LIMIT_BURST": "100000",
            "RATE_LIMIT_PER_MINUTE": "1000000",
            "PROMETHEUS_MULTIPROC_DIR": str(tmp / "prom"),
        },
    }
    processes = []
    try:
        for name, env in specs.items():
            args = [sys.executable, "-m", "linkedge.cli", name]
            processes.append(Process(args, stores.env(**common, **env), tmp / f"{name}.log"))
        wait_http(f"http://127.0.0.1:{analytics_port}/healthz", processes[0], timeout=60)
        url = f"http://127.0.0.1:{edge_port}"
        wait_http(f"{url}/healthz", processes[2], timeout=60)
        document = httpx.get(f"{url}/api/v1/openapi.json", timeout=10).json()
        base = document.get("servers", [{}])[0].get("url", "")
        paths = {base + path for path in document.get("paths", {})}
        missing = None if QUERY_ROUTE in paths else (
            f"the analytics query API ({QUERY_ROUTE}) is not in this edge's OpenAPI document"
        )  # fmt: skip
        yield Stack(url=url, stores=stores, analytics_ready=missing)
    finally:
        for process in reversed(processes):
            process.stop()


@dataclasses.dataclass
class Data:
    key: Key
    codes: list[str]
    xss_key: Key
    xss_code: str
    sent: int
    human: int


def create_link(stack: Stack, key: Key, **fields: Any) -> dict[str, Any]:
    with stack.api(key) as client:
        answer = client.post("/links", json=fields)
    assert answer.status_code == 201, answer.text
    return answer.json()  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def data(stack: Stack) -> Data:
    """An account with two links and a known mix of clicks, and another whose link and clicks
    carry XSS payloads, all counted by analytics before the first browser test."""
    if stack.analytics_ready:
        pytest.skip(stack.analytics_ready)
    assert [iptocc.country_code(ip) for ip in (GB, US, DE, FR)] == ["GB", "US", "DE", "FR"]
    key, xss_key = new_key(stack.stores), new_key(stack.stores)
    suffix = uuid.uuid4().hex[:6]
    promo = create_link(stack, key, url="https://example.com/promo", code=f"promo-{suffix}",
                        tags=["spring"])["code"]  # fmt: skip
    docs = create_link(stack, key, url="https://example.org/docs", code=f"docs-{suffix}")["code"]
    xss = create_link(stack, xss_key, url=XSS_TARGET, code=f"xss-{suffix}", tags=[XSS_TAG])["code"]
    sent = human = 0

    def click(code: str, n: int, bot: bool = False, **kwargs: Any) -> None:
        nonlocal sent, human
        for _ in range(n):
            stack.click(code, **kwargs)
        sent += n
        human += 0 if bot else n

    utm = "utm_source=newsletter&utm_campaign=spring"
    click(promo, 6, ip=GB, ua=CHROME_UA, referer="https://news.example.net/a", query=utm)
    click(promo, 4, ip=US, ua=IPHONE_UA, query="utm_source=social")
    click(docs, 3, ip=US, ua=CHROME_UA, referer="https://search.example.com/?q=docs")
    click(docs, 2, bot=True, ip=GB, ua="curl/8.5.0")
    click(docs, 1, bot=True, ip=US, ua=CHROME_UA, method="HEAD")
    click(promo, 3, ip=FR, ua=CHROME_UA, query=utm)
    click(docs, 2, ip=DE, ua=IPHONE_UA, referer="https://news.example.net/b")
    expected = [(key, sent)]
    xss_query = f"utm_source={quote(XSS_UTM)}&utm_campaign={quote(XSS_UTM)}"
    for _ in range(2):
        stack.click(xss, ip=US, ua=XSS_UA, referer=XSS_REFERRER, query=xss_query)
    expected.append((xss_key, 2))
    deadline = time.monotonic() + 90
    for account_key, clicks in expected:
        while True:
            answer = stack.query(account_key, metrics=["clicks"], date_range="7d")
            counted = answer["results"][0]["metrics"][0] if answer["results"] else 0
            if counted == clicks:
                break
            assert counted < clicks and time.monotonic() < deadline, f"{counted} of {clicks}"
            time.sleep(0.5)
    return Data(key=key, codes=[promo, docs], xss_key=xss_key, xss_code=xss, sent=sent, human=human)


# ---- in the browser --------------------------------------------------------------------------
@pytest.fixture
def page(browser: Any, stack: Stack) -> Iterator[Any]:
    context = browser.new_context(
        viewport={"width": 1280, "height": 900}, timezone_id=ZONE, locale="en-US"
    )
    tab = context.new_page()
    tab.set_default_timeout(15_000)
    watched = watch(tab, stack.url)
    tab.watched = watched
    yield tab
    context.close()
    assert not watched.problems(), watched.problems()


def sign_in(page: Any, stack: Stack, key: Key, fragment: str = "") -> None:
    page.goto(f"{stack.url}/dashboard/{fragment}")
    page.get_by_label("API key").fill(key.key)
    page.keyboard.press("Enter")  # the field has the focus: a keyboard user signs in the same way
    page.locator("#app").wait_for(state="visible")


def settled(page: Any) -> None:
    """Wait until the overview's render finished (no panel loading)."""
    page.wait_for_function(
        "() => !document.querySelector('#overview[aria-busy]') "
        "&& document.querySelector('#totals dd[data-value]:not([data-value=\"\"])')"
    )


def totals(page: Any) -> dict[str, int]:
    cells = page.locator("#totals dd")
    return {
        cells.nth(i).get_attribute("data-metric"): int(cells.nth(i).get_attribute("data-value"))
        for i in range(cells.count())
    }


def panel(page: Any, dimension: str) -> dict[str, int]:
    """A breakdown panel's rows: value -> clicks."""
    rows = page.locator(f'[data-panel="{dimension}"] tbody tr')
    out = {}
    for i in range(rows.count()):
        row = rows.nth(i)
        value = row.locator("button.row-filter").get_attribute("data-value")
        out[value] = int(row.locator('td[data-metric="clicks"]').get_attribute("data-value"))
    return out


def api_totals(stack: Stack, key: Key, filters: list[Any] | None = None) -> dict[str, int]:
    answer = stack.query(key, metrics=["clicks", "human_clicks", "visitors"], date_range="7d",
                         timezone=ZONE, filters=filters or [])  # fmt: skip
    values = answer["results"][0]["metrics"] if answer["results"] else [0, 0, 0]
    return dict(zip(["clicks", "human_clicks", "visitors"], values, strict=True))


def test_sign_in_totals_country_filter_and_sign_out(page: Any, stack: Stack, data: Data) -> None:
    sign_in(page, stack, data.key)
    settled(page)
    expected = api_totals(stack, data.key)
    assert totals(page) == expected
    assert expected["clicks"] == data.sent and expected["human_clicks"] == data.human
    assert page.locator("#tz").input_value() == ZONE
    assert panel(page, "country") == {"US": 8, "GB": 8, "FR": 3, "DE": 2}
    assert sum(panel(page, "link").values()) == data.sent
    # The key is in this tab's sessionStorage and nowhere else the page can put it.
    assert page.evaluate("sessionStorage.getItem('linkedge.apiKey')") == data.key.key
    assert data.key.key not in page.url
    assert page.evaluate("document.cookie") == ""

    # Keyboard: the row's value is a button; Enter on it filters the page.
    page.locator('[data-panel="country"] button[data-value="GB"]').focus()
    page.keyboard.press("Enter")
    page.wait_for_function("() => location.hash.includes('f=country%3AGB')")
    settled(page)
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-panel=country] button.row-filter')]"
        ".map(b => b.dataset.value).join() === 'GB'"
    )
    filtered = api_totals(stack, data.key, [["is", "country", ["GB"]]])
    assert filtered["clicks"] == 8 and totals(page) == filtered
    assert page.locator(".chip").inner_text().startswith("Country: GB")
    # Every panel is filtered: each one's clicks add up to GB's 8 (bot reasons: all 8 clicks).
    for dimension in ("link", "device", "browser", "os", "referrer_host", "bot_reason"):
        assert sum(panel(page, dimension).values()) == 8, dimension
    assert panel(page, "link") == {data.codes[0]: 6, data.codes[1]: 2}

    # The view is in the fragment: a reload shows the same filtered view.
    page.reload()
    settled(page)
    assert totals(page) == filtered
    page.get_by_role("button", name=re.compile("Remove filter Country: GB")).click()
    page.wait_for_function("() => !location.hash.includes('country')")
    settled(page)
    assert totals(page) == expected

    page.get_by_role("button", name="Sign out").click()
    page.locator("#signin").wait_for(state="visible")
    assert page.locator("#app").is_hidden()
    assert page.evaluate("sessionStorage.length") == 0
    page.reload()
    page.locator("#signin").wait_for(state="visible")


def test_a_wrong_key_gets_a_message_and_no_session(page: Any, stack: Stack) -> None:
    page.watched.allow(r"status of 401")
    page.goto(f"{stack.url}/dashboard/")
    page.get_by_label("API key").fill("lk_" + "x" * 43)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_text("This API key was not accepted").wait_for()
    assert page.locator("#app").is_hidden()
    assert page.evaluate("sessionStorage.length") == 0


def test_a_key_without_stats_read_is_told_which_scope_it_lacks(page: Any, stack: Stack) -> None:
    if stack.analytics_ready:
        pytest.skip(stack.analytics_ready)
    page.watched.allow(r"status of 403")
    sign_in(page, stack, new_key(stack.stores, ("links:read", "links:write")))
    error = page.locator("#overview-error")
    error.wait_for(state="visible")
    assert "stats:read" in error.inner_text()
    page.locator("#links-table tbody tr").first.wait_for()  # the links half still works


def test_create_follow_edit_and_delete_a_link_through_the_form(page: Any, stack: Stack) -> None:
    key = new_key(stack.stores, ("links:read", "links:write"))
    page.watched.allow(r"status of 40[34]")  # the overview's queries: this key has no stats:read
    page.watched.allow(r"status of 422")
    sign_in(page, stack, key)
    code = f"form-{uuid.uuid4().hex[:8]}"
    page.get_by_role("button", name="New link").click()
    page.get_by_label("Target URL").fill("ftp://example.com/file")
    page.get_by_label("Code (optional)").fill(code)
    page.get_by_role("button", name="Create").click()
    url_error = page.locator("#e-url")
    url_error.wait_for(state="visible")
    assert url_error.inner_text()  # the API's own message, next to the field it names
    assert page.get_by_label("Target URL").get_attribute("aria-invalid") == "true"

    page.get_by_label("Target URL").fill("https://example.com/from-the-form")
    page.get_by_label("Tags (comma-separated)").fill("made, in browser")
    page.get_by_role("button", name="Create").click()
    row = page.locator(f'#links-table tr[data-code="{code}"]')
    row.wait_for()
    assert row.locator(".short-url").inner_text().endswith(f"/{code}")
    assert row.locator(".tag").all_inner_texts() == ["made", "in browser"]
    followed = httpx.get(f"{stack.url}/{code}", timeout=10)
    assert followed.status_code == 302
    assert followed.headers["location"] == "https://example.com/from-the-form"

    row.get_by_role("button", name=f"Edit {code}").click()
    page.get_by_label("Target URL").fill("https://example.org/edited")
    page.get_by_role("button", name="Save").click()
    page.locator(
        f'#links-table tr[data-code="{code}"] a.target:text("example.org/edited")'
    ).wait_for()
    deadline = time.monotonic() + 10
    while httpx.get(f"{stack.url}/{code}", timeout=10).headers.get("location") != (
        "https://example.org/edited"
    ):
        assert time.monotonic() < deadline, "the edit never reached the redirect"
        time.sleep(0.2)

    row.get_by_role("button", name=f"Delete {code}").click()
    page.get_by_role("button", name=f"Delete {code}").click()  # the confirmation, in the row
    row.wait_for(state="detached")
    deadline = time.monotonic() + 10
    while httpx.get(f"{stack.url}/{code}", timeout=10).status_code != 404:
        assert time.monotonic() < deadline, "the deleted code still redirects"
        time.sleep(0.2)


def test_payloads_in_clicks_and_links_are_text_and_nothing_runs(
    page: Any, stack: Stack, data: Data
) -> None:
    sign_in(page, stack, data.xss_key)
    settled(page)
    # The link list: tag and target exactly as stored, as text; the target is not a live link
    # of another scheme.
    row = page.locator(f'#links-table tr[data-code="{data.xss_code}"]')
    row.wait_for()
    assert row.locator(".tag").inner_text() == XSS_TAG
    assert row.locator(".target").inner_text() == XSS_TARGET
    assert row.locator("a.target").get_attribute("href").startswith("https://example.com/")
    # UTM values with payloads, in the UTM panels.
    assert XSS_UTM in panel(page, "utm_source") and XSS_UTM in panel(page, "utm_campaign")
    assert page.locator('[data-panel="utm_source"]').get_by_text(XSS_UTM, exact=True).count() == 1
    # The referrer: filter by its host, and the panel shows whole referrer URLs.
    page.locator('[data-panel="referrer_host"] button[data-value="evil.example"]').click()
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-panel=referrer_host] button.row-filter')]"
        ".some(b => b.dataset.value.startsWith('https://evil.example/'))"
    )
    settled(page)
    shown = page.locator('[data-panel="referrer_host"] button.row-filter').all_inner_texts()
    assert XSS_REFERRER in shown
    # The link's own page, with its tag and target.
    page.evaluate(f"location.hash = 'link={data.xss_code}'")
    page.locator("#link-title").wait_for()
    settled(page)
    assert page.locator("#link-detail .tag").inner_text() == XSS_TAG
    assert page.locator("#link-detail .target").inner_text() == XSS_TARGET
    assert totals(page)["clicks"] == 2
    # Nothing became markup: no element a payload would have made exists.
    assert page.locator("img[src=x], #overview script, #links script").count() == 0
    assert page.evaluate("document.scripts.length") == 1  # main.js only
    assert not page.watched.problems()


def test_screenshots_at_desktop_and_phone_widths_light_and_dark(
    browser: Any, stack: Stack, data: Data
) -> None:
    backgrounds = {}
    for width, height, scheme in ((1280, 900, "light"), (360, 740, "light"), (1280, 900, "dark")):
        context = browser.new_context(
            viewport={"width": width, "height": height},
            timezone_id=ZONE,
            locale="en-US",
            color_scheme=scheme,
        )
        tab = context.new_page()
        watched = watch(tab, stack.url)
        name = f"{width}" + ("-dark" if scheme == "dark" else "")
        try:
            sign_in(tab, stack, data.key)
            settled(tab)
            tab.locator("#links-table tbody tr").first.wait_for()
            backgrounds[scheme] = tab.evaluate("getComputedStyle(document.body).backgroundColor")
            # Readable at this width: nothing makes the page itself scroll sideways.
            assert tab.evaluate("document.documentElement.scrollWidth") <= width
            assert screenshot(tab, f"overview-{name}").stat().st_size > 10_000
            if name == "1280":
                screenshot(tab, "overview-1280-top", full_page=False)  # the README's
            tab.evaluate(f"location.hash = 'link={data.codes[0]}'")
            tab.locator("#link-title").wait_for()
            settled(tab)
            assert totals(tab)["clicks"] == 13
            assert tab.evaluate("document.documentElement.scrollWidth") <= width
            assert screenshot(tab, f"link-{name}").stat().st_size > 10_000
        finally:
            context.close()
        assert not watched.problems(), watched.problems()
    assert backgrounds["light"] != backgrounds["dark"]  # prefers-color-scheme is followed


def test_range_timezone_and_custom_dates_are_in_the_fragment_and_the_queries(
    page: Any, stack: Stack, data: Data
) -> None:
    sign_in(page, stack, data.key, "#range=24h&tz=America/New_York")
    settled(page)
    assert page.locator("#range").input_value() == "24h"
    assert page.locator("#tz").input_value() == "America/New_York"
    with stack.api(data.key) as client:
        answer = client.post(
            "/analytics/query",
            json={"metrics": ["human_clicks", "bot_clicks"], "dimensions": ["time:hour"],
                  "date_range": "24h", "timezone": "America/New_York"},
        ).json()  # fmt: skip
    bars = page.locator("#chart svg g.bucket")
    assert abs(bars.count() - len(answer["results"])) <= 1  # an hour may turn in between
    assert (
        page.locator("#chart svg")
        .get_attribute("aria-label")
        .startswith(f"Clicks over time: {data.sent} clicks")
    )
    page.get_by_label("Timezone").select_option("Asia/Tokyo")
    page.wait_for_function("() => location.hash.includes('tz=Asia%2FTokyo')")
    page.get_by_label("Range").select_option("custom")
    today = page.evaluate("new Date().toISOString().slice(0, 10)")
    page.get_by_label("From", exact=True).fill("2020-01-01")
    page.get_by_label("To", exact=True).fill(today)
    page.get_by_role("button", name="Apply").click()
    page.wait_for_function("() => location.hash.includes('range=custom')")
    settled(page)
    assert "from=2020-01-01" in page.url and f"to={today}" in page.url
    expected = stack.query(data.key, metrics=["clicks", "human_clicks", "visitors"],
                           date_range=["2020-01-01", today], timezone="Asia/Tokyo")  # fmt: skip
    assert list(totals(page).values()) == expected["results"][0]["metrics"]
    # A month series over a span that long; every control has a label.
    assert page.locator("#chart svg g.bucket").count() > 12
    unlabelled = page.evaluate(
        "[...document.querySelectorAll('input, select, button')]"
        ".filter(e => !e.closest('[hidden]') && !(e.labels && e.labels.length)"
        " && !e.getAttribute('aria-label') && !e.textContent.trim()).map(e => e.outerHTML)"
    )
    assert unlabelled == []
    # A zone the browser does not list (a shared view's) is still the one shown and queried.
    page.evaluate("location.hash = 'tz=Etc%2FGMT%2B5'")
    page.wait_for_function("() => document.querySelector('#tz').value === 'Etc/GMT+5'")
    settled(page)
    assert not page.locator("#overview-error").is_visible()


def test_numbers_follow_the_browser_locale(browser: Any, stack: Stack) -> None:
    context = browser.new_context(locale="de-DE")
    tab = context.new_page()
    try:
        tab.goto(f"{stack.url}/dashboard/")
        base = tab.locator("link[rel=stylesheet]").get_attribute("href").rsplit("/", 1)[0]
        formatted = tab.evaluate(f"import('{base}/dom.js').then(m => m.formatNumber(1234567))")
        assert formatted == "1.234.567"
    finally:
        context.close()


def test_a_rate_limited_key_is_told_to_wait(browser: Any, start_edge: Any, stores: Stores) -> None:
    edge = start_edge(workers=1, RATE_LIMIT_BURST="1", RATE_LIMIT_PER_MINUTE="1")
    key = new_key(stores)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    watched = watch(tab, edge.url)
    watched.allow(r"status of 429")
    try:
        tab.goto(f"{edge.url}/dashboard/")
        tab.get_by_label("API key").fill(key.key)
        tab.get_by_role("button", name="Sign in").click()  # the one request the key may send
        error = tab.locator("#overview-error")
        error.wait_for(state="visible")
        assert re.search(r"Too many requests.*Try again in \d+ seconds", error.inner_text())
        assert "Too many requests" in tab.locator("#links-error").inner_text()
    finally:
        context.close()
    assert not watched.problems(), watched.problems()


def test_pages_of_links_copy_and_empty_states(page: Any, stack: Stack) -> None:
    if stack.analytics_ready:
        pytest.skip(stack.analytics_ready)
    key = new_key(stack.stores)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=stack.url)
    sign_in(page, stack, key)
    settled(page)
    # A new account: every panel and the link list say there is nothing yet.
    assert totals(page) == {"clicks": 0, "human_clicks": 0, "visitors": 0}
    assert page.locator("#panels .empty").count() == page.locator("#panels [data-panel]").count()
    assert "No links yet" in page.locator("#links-table tbody").inner_text()

    prefix = f"pg{uuid.uuid4().hex[:6]}"
    links = [{"url": f"https://example.com/{i}", "code": f"{prefix}-{i:02d}"} for i in range(25)]
    with stack.api(key) as client:
        assert client.post("/links/bulk", json={"links": links}).json()["created"] == 25
    page.reload()
    rows = page.locator("#links-table tbody tr")
    rows.first.wait_for()
    assert rows.count() == 20 and rows.first.get_attribute("data-code") == f"{prefix}-24"
    assert page.get_by_role("button", name="Newer").is_disabled()
    page.get_by_role("button", name="Older").click()
    page.locator(f'#links-table tr[data-code="{prefix}-00"]').wait_for()
    assert rows.count() == 5 and page.get_by_role("button", name="Older").is_disabled()
    page.get_by_role("button", name="Newer").click()
    page.locator(f'#links-table tr[data-code="{prefix}-24"]').wait_for()

    row = page.locator(f'#links-table tr[data-code="{prefix}-24"]')
    short_url = row.locator(".short-url").inner_text()
    row.get_by_role("button", name=f"Copy {short_url}").click()
    page.wait_for_function(
        f"() => document.querySelector('tr[data-code=\"{prefix}-24\"] button.copy')"
        ".textContent === 'Copied'"
    )
    assert page.evaluate("navigator.clipboard.readText()") == short_url
