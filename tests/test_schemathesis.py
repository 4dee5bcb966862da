"""The OpenAPI document is the contract: schemathesis drives a live edge from it, every check on.

One edge (one worker, per-key limits raised so that the run is never rate limited) and the
analytics process it sends queries to (the embedded ClickHouse engine) run for the module, on a
Redis of their own. ``test_every_operation`` runs each operation of ``/api/v1/openapi.json`` with
generated valid and invalid inputs (the document's examples, invalid values at the bounds of every
keyword, then Hypothesis's), a bounded number each; ``test_link_lifecycle`` runs the state machine built from the document's OpenAPI links
(create, then get, edit, stats, analytics and delete what was created). Every built-in check runs
on every response (the ``--checks all`` of the command line): no 5xx, status codes, content types,
headers and bodies as documented, valid input accepted, invalid input refused, requests without a
key refused, a deleted link gone, a created one there. One exception, stated at ``ANALYTICS``.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import hypothesis
import pytest
import schemathesis
from conftest import Account, Stores, analytics_pipeline
from hypothesis import strategies as st
from schemathesis.specs.openapi.schemas import OpenApiSchema

from edge.api import links, openapi, queries
from linkedge.embedded import EmbeddedRedis

API = "/api/v1"
SESSIONS = 5
MAX_EXAMPLES = 12  # per operation and phase: the whole module in about a minute here
SETTINGS = hypothesis.settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,  # the same inputs on every run: a failure here is reproducible
    database=None,
    suppress_health_check=list(hypothesis.HealthCheck),
)


@dataclasses.dataclass
class Api:
    url: str


@pytest.fixture(scope="module")
def api(
    stores: Stores, own_redis: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Api]:
    tmp = tmp_path_factory.mktemp("schemathesis")
    with analytics_pipeline(
        stores,
        own_redis.url,
        tmp,
        aggregator=False,
        RATE_LIMIT_BURST="1000000",
        RATE_LIMIT_PER_MINUTE="1000000",
    ) as (edge, _analytics_url):
        yield Api(url=edge.url)


# The analytics query's rules across fields (order_by names only the query's own metrics and
# dimensions, a range that starts before it ends, a minute breakdown of at most 7 days, a longer
# limit for a time series alone) cannot be stated in JSON Schema, so a schema-valid query may be
# refused with a 422: for those two operations the check that valid data is accepted is off. Every
# other check runs on them, invalid queries included.
ANALYTICS = ("queryAnalytics", "getLinkAnalytics")
REFUSALS = ["400", "401", "403", "404", "405", "406", "409", "415", "422", "428", "429", "5xx"]


def _config(headers: dict[str, str] | None = None) -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            "headers": headers or {},
            # The key is sent with every request (see the fixtures): schemathesis's own check
            # of requests without it (ignored_auth) covers the 401s.
            "generation": {"max-examples": MAX_EXAMPLES, "with-security-parameters": False},
            "checks": {
                "enabled": True,
                # A request line too long for the HTTP server is refused by it, with a 414.
                "negative_data_rejection": {"expected-statuses": [*REFUSALS, "414"]},
            },
            # The coverage phase (boundary values of every keyword) for invalid inputs only:
            # valid ones it builds from patterns alone, so its targets would break the host
            # policy (see _targets), and building them from this document's patterns (classes
            # of a few thousand refused characters) takes over ten minutes of CPU here.
            "phases": {"coverage": {"enabled": True, "generation": {"mode": "negative"}}},
            "operations": [
                {
                    "include-operation-id": name,
                    "checks": {"positive_data_acceptance": {"enabled": False}},
                }
                for name in ANALYTICS
            ],
        }
    )


def _targets() -> st.SearchStrategy[str]:
    """Targets the policy of ``edge.api.hosts`` allows, for the ``http-url`` format of ``url`` and
    ``expired_url``.

    The document states a target's form as a pattern and its host policy in prose (private,
    loopback, numeric and mixed-script hosts refused), which no schema can state. Generating from
    the pattern alone would give ``http://0.0/`` and ``http://a/``, rightly refused, and the
    positive check would fail on the policy rather than on a bug; a 422 counted as a fine answer to
    valid data would hide every other field's bugs. So valid targets come from public hosts (ASCII,
    internationalised, a public IPv4 and IPv6 address) with any port, path, query and fragment the
    pattern allows, and invalid ones from the pattern as usual.
    """
    label = st.from_regex(r"[a-z][a-z0-9]{0,10}(?:-[a-z0-9]{1,10}){0,2}", fullmatch=True)
    name = st.builds(
        lambda labels, tld: ".".join([*labels, tld]),
        st.lists(label, min_size=1, max_size=3),
        st.sampled_from(["com", "org", "net", "de", "io", "jp"]),
    )
    host = st.one_of(
        name,
        name.map(str.upper),
        st.sampled_from(
            ["bücher.de", "例え.jp", "пример.рф", "93.184.215.14", "[2606:4700::1111]"]
        ),
    )
    port = st.one_of(st.just(""), st.integers(1, 65535).map(lambda port: f":{port}"))
    text = st.text(
        st.characters(exclude_categories=("Cc", "Cf", "Cs", "Zs", "Zl", "Zp")), max_size=40
    )  # 3 x 40 characters of up to 12 once percent-encoded: within 2048
    rest = st.builds(
        lambda path, query, fragment: f"/{path}" + (f"?{query}" if query else "") + fragment,
        text,
        text,
        st.one_of(st.just(""), text.map(lambda fragment: f"#{fragment}")),
    )
    return st.builds(
        "{}://{}{}{}".format, st.sampled_from(["http", "https", "HTTPS"]), host, port, rest
    )


def _cursors() -> st.SearchStrategy[str]:
    """Cursors as the API makes them (``next_cursor``), or empty (no cursor): the document calls
    ``cursor`` opaque, so valid ones are the server's to make."""
    return st.one_of(st.just(""), st.integers(1, queries.MAX_ID).map(links.encode_cursor))


def _instants() -> st.SearchStrategy[str]:
    """RFC 3339 instants the API can store and read back, for ``date-time`` (``expires_at``).

    The document states the form and the ±15:59 offset as a pattern, and in prose that the UTC
    instant falls strictly inside years 1 to 9999 (asyncpg turns the two ends into infinities);
    schemathesis's own generator favours exactly those ends. So valid instants keep a day away
    from them, with every separator, fraction and offset the pattern allows.
    """

    def text(moment: datetime, separator: str, fraction: str, minutes: int, zulu: str) -> str:
        date = f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"
        time = f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}{fraction}"
        if minutes == 0 and zulu:
            return f"{date}{separator}{time}{zulu}"
        sign = "-" if minutes < 0 else "+"
        return f"{date}{separator}{time}{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"

    return st.builds(
        text,
        st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
        st.sampled_from(["T", "t", " "]),
        st.one_of(st.just(""), st.from_regex(r"\.[0-9]{1,9}", fullmatch=True)),
        st.integers(-(15 * 60 + 59), 15 * 60 + 59),
        st.sampled_from(["Z", "z", ""]),
    )


schemathesis.openapi.format("http-url", _targets())
schemathesis.openapi.format("date-time", _instants())
schemathesis.openapi.format("cursor", _cursors())


@pytest.fixture
def api_schema(api: Api, account: Callable[..., Account]) -> OpenApiSchema:
    """The served document, with a key of every scope on a new account."""
    return schemathesis.openapi.from_url(
        f"{api.url}{API}/openapi.json", config=_config(account().headers)
    )


# The tests of each operation are made when pytest collects this module, before any edge runs,
# so they are made from the document itself (tests/test_api_openapi.py checks that the edge
# serves exactly this), not fetched from the edge as the state machine's is.
schema = schemathesis.openapi.from_dict(openapi.spec(API), config=_config())


@pytest.fixture
def headers(account: Callable[..., Account]) -> dict[str, str]:
    return account().headers


@schema.parametrize()
@SETTINGS
def test_every_operation(case: schemathesis.Case[Any], api: Api, headers: dict[str, str]) -> None:
    case.call_and_validate(base_url=f"{api.url}{API}", headers=headers)


def test_link_lifecycle(api_schema: OpenApiSchema) -> None:
    answered: Counter[tuple[str, int]] = Counter()

    class Lifecycle(api_schema.as_state_machine()):  # type: ignore[misc]
        def after_call(self, response: schemathesis.Response, case: schemathesis.Case[Any]) -> None:
            super().after_call(response, case)
            answered[case.operation.label, response.status_code] += 1

    # Each scenario depends on what the server answered before, so a failing one is reported as
    # found rather than shrunk: a replay against a server in another state is not the same test.
    settings = hypothesis.settings(
        SETTINGS,
        derandomize=False,
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
        stateful_step_count=8,
    )
    for _ in range(SESSIONS):
        try:
            Lifecycle.run(settings=settings)
            break
        except hypothesis.errors.FlakyStrategyDefinition:
            # Hypothesis replayed a prefix of choices and the server's answers (which links exist,
            # which codes are taken) made it draw otherwise: as schemathesis's own runner does,
            # go on in a fresh session. A failed check is a FailureGroup and fails the test.
            continue
    # The scenarios went through the document's links: created links were read, edited, deleted.
    assert answered["POST /links", 201], answered
    for label, status in [
        ("GET /links/{code}", 200),
        ("PATCH /links/{code}", 200),
        ("DELETE /links/{code}", 204),
    ]:
        assert answered[label, status], (label, status, answered)
