"""Load test of a running linkedge: visitors following short links, and API clients editing them.

    python loadtest/seed.py --count 10000            # creates links, writes the codes file
    locust --config loadtest/locust.conf             # headless run with the defaults there

``RedirectUser`` follows short links the way a browser's first hop does: one GET, the redirect
not followed, the answer checked for a redirect status and a ``Location``. Codes are drawn from a
Zipf-like popularity over the codes file (rank k is clicked in proportion to 1/k^s), so a few links
are hot and most are cold, as with real short links. ``ApiUser`` creates, reads, edits and lists
links with the API key in ``LINKEDGE_API_KEY``. At the end the run fails (exit code 1) when the
failure ratio or the 95th percentile response time is over its threshold.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import uuid
from pathlib import Path
from typing import Any

from locust import FastHttpUser, between, events, task
from locust.env import Environment
from locust.exception import StopUser
from locust.runners import WorkerRunner

REDIRECT_STATUSES = frozenset({301, 302, 307, 308})
DEFAULT_CODES_FILE = Path(__file__).resolve().parent / "reports" / "codes.txt"
# Used when --host is not given: the URL `make run` writes to .linkedge/run.env.
DEFAULT_HOST = os.environ.get("LINKEDGE_URL", "http://127.0.0.1:8000")

log = logging.getLogger("linkedge.loadtest")


@events.init_command_line_parser.add_listener  # type: ignore[untyped-decorator]
def add_arguments(parser: Any) -> None:
    group = parser.add_argument_group("linkedge")
    group.add_argument(
        "--codes-file",
        default=str(DEFAULT_CODES_FILE),
        help="short codes, one a line, most popular first (loadtest/seed.py writes it)",
    )
    group.add_argument(
        "--zipf-s", type=float, default=1.1, help="Zipf exponent of code popularity (0: uniform)"
    )
    group.add_argument(
        "--max-fail-ratio",
        type=float,
        default=0.01,
        help="fail the run above this ratio of failed requests",
    )
    group.add_argument(
        "--max-p95-ms",
        type=float,
        default=500.0,
        help="fail the run when the overall 95th percentile is above this (ms)",
    )


class Popularity:
    """Codes ranked by popularity; rank k (from 1) is drawn in proportion to 1/k^s."""

    def __init__(self, codes: list[str], s: float) -> None:
        if not codes:
            raise ValueError("no codes to draw from")
        self.codes = codes
        self.cum_weights = list(
            itertools.accumulate(1.0 / rank**s for rank in range(1, len(codes) + 1))
        )

    @classmethod
    def from_file(cls, path: Path, s: float) -> Popularity:
        return cls([line.strip() for line in path.read_text().splitlines() if line.strip()], s)

    def draw(self) -> str:
        return random.choices(self.codes, cum_weights=self.cum_weights)[0]


popularity: Popularity | None = None


@events.init.add_listener  # type: ignore[untyped-decorator]
def load_codes(environment: Environment, **_: Any) -> None:
    """Every process that runs users reads the codes once (a distributed run's workers too)."""
    global popularity
    options = environment.parsed_options
    if options is None:
        return
    path = Path(options.codes_file)
    try:
        popularity = Popularity.from_file(path, options.zipf_s)
    except (OSError, ValueError) as exc:
        log.error("cannot read codes from %s (%s): run loadtest/seed.py first", path, exc)


class RedirectUser(FastHttpUser):
    """A visitor clicking short links: the first hop only, as a browser sees it."""

    host = DEFAULT_HOST
    wait_time = between(0.05, 0.2)

    def on_start(self) -> None:
        if popularity is None:
            raise StopUser()

    @task
    def follow_short_link(self) -> None:
        assert popularity is not None
        code = popularity.draw()
        with self.client.get(
            f"/{code}", name="/[code]", allow_redirects=False, catch_response=True
        ) as resp:
            if resp.status_code not in REDIRECT_STATUSES:
                resp.failure(f"status {resp.status_code}, expected a redirect")
            elif not resp.headers.get("Location"):
                resp.failure("redirect without a Location header")
            else:
                resp.success()


class ApiUser(FastHttpUser):
    """An API client managing its links. Light: each key is rate limited (RATE_LIMIT_PER_MINUTE)."""

    host = DEFAULT_HOST
    # Exactly one, whatever --users says; the other users are visitors. One key, one client.
    fixed_count = 1
    wait_time = between(1, 3)

    def on_start(self) -> None:
        key = os.environ.get("LINKEDGE_API_KEY", "")
        if not key:
            log.error("LINKEDGE_API_KEY is not set: ApiUser stops")
            raise StopUser()
        self.headers = {"Authorization": f"Bearer {key}"}
        self.codes: list[str] = []
        self.create_link()  # so that reads and edits have a link of their own from the start

    @task(2)
    def create_link(self) -> None:
        body = {"url": f"https://example.com/loadtest/{uuid.uuid4().hex}", "tags": ["loadtest"]}
        with self.client.post(
            "/api/v1/links",
            json=body,
            headers=self.headers,
            name="/api/v1/links [create]",
            catch_response=True,
        ) as resp:
            if resp.status_code != 201:
                resp.failure(f"status {resp.status_code}: {resp.text[:200]}")
                return
            self.codes.append(resp.json()["code"])

    @task(4)
    def read_link(self) -> None:
        if not self.codes:
            return
        code = random.choice(self.codes)
        with self.client.get(
            f"/api/v1/links/{code}",
            headers=self.headers,
            name="/api/v1/links/[code]",
            catch_response=True,
        ) as resp:
            if resp.status_code != 200:
                resp.failure(f"status {resp.status_code}")
            elif resp.json()["code"] != code:
                resp.failure("another link came back")

    @task(2)
    def edit_link(self) -> None:
        if not self.codes:
            return
        code = random.choice(self.codes)
        target = f"https://example.com/loadtest/edited/{uuid.uuid4().hex}"
        with self.client.request(
            "PATCH",
            f"/api/v1/links/{code}",
            json={"url": target},
            headers=self.headers,
            name="/api/v1/links/[code] [edit]",
            catch_response=True,
        ) as resp:
            if resp.status_code != 200:
                resp.failure(f"status {resp.status_code}")
            elif resp.json()["url"] != target:
                resp.failure("the edit did not stick")

    @task(1)
    def list_links(self) -> None:
        with self.client.get(
            "/api/v1/links?limit=20&tag=loadtest",
            headers=self.headers,
            name="/api/v1/links [list]",
            catch_response=True,
        ) as resp:
            if resp.status_code != 200:
                resp.failure(f"status {resp.status_code}")


@events.quitting.add_listener  # type: ignore[untyped-decorator]
def check_thresholds(environment: Environment, **_: Any) -> None:
    """Set the exit code from the totals: CI and `make loadtest` fail on a bad run."""
    if isinstance(environment.runner, WorkerRunner) or environment.parsed_options is None:
        return
    options = environment.parsed_options
    total = environment.stats.total
    p95 = total.get_response_time_percentile(0.95) or 0.0
    if total.num_requests == 0:
        log.error("threshold: no request was made")
        environment.process_exit_code = 1
    elif total.fail_ratio > options.max_fail_ratio:
        log.error("threshold: failure ratio %.4f > %.4f", total.fail_ratio, options.max_fail_ratio)
        environment.process_exit_code = 1
    elif p95 > options.max_p95_ms:
        log.error("threshold: 95th percentile %.0f ms > %.0f ms", p95, options.max_p95_ms)
        environment.process_exit_code = 1
    else:
        log.info(
            "thresholds met: %d requests, failure ratio %.4f, p95 %.0f ms",
            total.num_requests,
            total.fail_ratio,
            p95,
        )
        environment.process_exit_code = 0
