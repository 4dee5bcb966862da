"""``GET``/``HEAD /{code}``: the redirect, as a raw ASGI callable with nothing in front of it.

Everything a response needs is built once per link (``Target.of``, when the link enters the
worker's cache) or once at import: a request on the hot path looks the code up in the local cache,
picks one of the prebuilt ``http.response.start`` messages, hands the click to the recorder and
sends. No Starlette objects, no per-request logging, no Prometheus call: served statuses are
counted in plain ints that ``HotCounters.fold`` moves into ``REDIRECTS`` once a second.

Answers:
- a link: its ``redirect_type`` (301/302/307/308) with ``Location``; 302/307 say
  ``Cache-Control: private, no-store``, 301/308 ``public, max-age=PERMANENT_MAX_AGE_S``.
  With ``forward_query`` the request's query parameters are appended to the target's; a parameter
  the target already names is left out, so the target's own values always win.
- expired (``expires_at`` passed): 302 (no-store) to ``expired_url``, or 410 without one.
- unknown, deleted or disabled code, or a code outside ``[A-Za-z0-9_-]{1,64}``: 404.
  A stored target with control characters (which the API never stores) is a 404 too, counted in
  ``linkedge_unsafe_targets_total``: nothing unchecked reaches a header.
- another method: 405 with ``Allow: GET, HEAD``. Lookup stores both down: 503.
Each served redirect (the ``expired_url`` one too) is handed over with exactly one call:
``clicks.add(...)`` (the encoder's, what ``ClickRecorder.record`` does, inlined) or, in synchronous
mode, ``await clicks.record_now(...)``.

The most common request of all, GET or HEAD of a code in the local cache, alive, with no query to
forward, does not reach ``__call__``: ``hot_path`` gives ``edge.app`` a C call
(``edge._clickfast.Hot``) that does this handler's work for it (the cache touch, the tier count,
the click recorded into the encoder's batch, the status counted) and returns the two messages to
send. A redirect took ~21,000 instructions this way in Python against ~5,400 for a bare ASGI app,
~13,500 with the C call (callgrind, BENCHMARKS.md); anything the C call is not sure of goes to
the handler. tests/test_hotpath.py holds the two to the same answers, clicks and counters.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote, unquote_plus

import orjson

from edge.cache import MISSING
from edge.linkstore import LOCAL, StoreUnavailable
from edge.metrics import CLICKS_DROPPED, REDIRECTS, UNSAFE_TARGETS
from edge.records import LinkRecord

try:
    import edge._clickfast as _clickfast  # noqa: PLR0402 -- mypy finds the stub only so
except ImportError:  # not compiled here: every request goes through RedirectHandler
    _clickfast = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from collections.abc import Callable

    from starlette.types import Receive, Scope, Send

    from edge.cache import Clock
    from edge.clicks import Recorder
    from edge.linkstore import LinkStore

log = logging.getLogger("linkedge.edge.redirect")

CODE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_UNSAFE = re.compile(r"[\x00-\x20\x7f]")  # controls and whitespace: never in a Location
_PRINTABLE = "".join(chr(c) for c in range(0x21, 0x7F))
MAX_LOCATION = 8192  # a merged Location longer than this is served without the request's query

# Statuses the handler answers; HotCounters counts by index into this tuple.
STATUSES = (301, 302, 307, 308, 404, 405, 410, 503)
_SLOT = {status: index for index, status in enumerate(STATUSES)}

Response = tuple[dict[str, Any], dict[str, Any], "str | None", int]  # start, body, Location, slot
# What the hot path returns: the start and body messages to send first (for a GET the prebuilt
# Response itself, no new tuple; for a HEAD a pair with the empty body).
Answer = tuple[Any, ...]

_EMPTY_BODY: dict[str, Any] = {"type": "http.response.body", "body": b""}
_NO_STORE = b"private, no-store"
_PROBLEM_TYPE = b"application/problem+json"
PROBLEM_TYPES = "https://linkedge.dev/problems/"  # the API's problem type URIs (edge.api.problems)


def _problem(
    status: int, slug: str, title: str, detail: str, *extra: tuple[bytes, bytes]
) -> Response:
    body = orjson.dumps(
        {"type": PROBLEM_TYPES + slug, "title": title, "status": status, "detail": detail}
    )
    headers = [
        (b"content-type", _PROBLEM_TYPE),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", _NO_STORE),
        *extra,
    ]
    start = {"type": "http.response.start", "status": status, "headers": headers}
    return start, {"type": "http.response.body", "body": body}, None, _SLOT[status]


NOT_FOUND = _problem(404, "not-found", "Not found", "No link has this code.")
GONE = _problem(410, "gone", "Gone", "This link has expired.")
METHOD_NOT_ALLOWED = _problem(
    405,
    "method-not-allowed",
    "Method not allowed",
    "Short links answer GET and HEAD only.",
    (b"allow", b"GET, HEAD"),
)
UNAVAILABLE = _problem(
    503,
    "unavailable",
    "Service unavailable",
    "The link store cannot be reached; try again shortly.",
    (b"retry-after", b"1"),
)


def _redirect(status: int, location: str, cache_control: bytes) -> Response:
    headers = [
        (b"location", location.encode("ascii")),
        (b"cache-control", cache_control),
        (b"content-length", b"0"),
    ]
    return (
        {"type": "http.response.start", "status": status, "headers": headers},
        _EMPTY_BODY,
        location,
        _SLOT[status],
    )


def safe_location(url: str | None) -> str | None:
    """``url`` as a header value: ``None`` if it holds controls or whitespace; non-ASCII escaped."""
    if not url or _UNSAFE.search(url):
        return None
    return url if url.isascii() else quote(url, safe=_PRINTABLE)


class Target:
    """The answers of one link, built once when it enters the worker's cache."""

    __slots__ = (
        "_base",
        "_cache_control",
        "_fragment",
        "_own_names",
        "expired",
        "expires_at",
        "forward",
        "hot",
        "link",
        "main",
    )

    def __init__(self, link: LinkRecord, main: Response, expired: Response | None = None) -> None:
        self.link = link
        self.main = main
        self.expired = expired or GONE
        self.expires_at = link.expires_at
        self.forward = False
        self._base = self._fragment = ""
        self._own_names: frozenset[str] = frozenset()
        self._cache_control = _NO_STORE
        self.hot = (link, main, self.expires_at, False)  # what the C hot path reads (Hot)

    @classmethod
    def of(cls, link: LinkRecord, *, permanent_max_age_s: int) -> Target:
        if link.disabled:
            return cls(link, NOT_FOUND, NOT_FOUND)
        location = safe_location(link.url)
        if location is None:
            UNSAFE_TARGETS.inc()
            log.warning(
                "stored target refused: not a safe header value",
                extra={"code": link.code, "link_id": link.id},
            )
            return cls(link, NOT_FOUND, NOT_FOUND)
        permanent = link.redirect_type in (301, 308)
        cache_control = b"public, max-age=%d" % permanent_max_age_s if permanent else _NO_STORE
        expired = None
        if link.expires_at is not None and link.expired_url:
            expired_location = safe_location(link.expired_url)
            if expired_location is None:
                UNSAFE_TARGETS.inc()
                log.warning(
                    "stored expired_url refused", extra={"code": link.code, "link_id": link.id}
                )
            else:
                expired = _redirect(302, expired_location, _NO_STORE)
        target = cls(link, _redirect(link.redirect_type, location, cache_control), expired)
        if link.forward_query:
            target.forward = True
            target._base, hash_, fragment = location.partition("#")
            target._fragment = hash_ + fragment
            own_query = target._base.partition("?")[2]
            target._own_names = frozenset(
                unquote_plus(pair.partition("=")[0]) for pair in own_query.split("&") if pair
            )
            target._cache_control = cache_control
            target.hot = (link, target.main, target.expires_at, True)
        return target

    def with_query(self, query_string: bytes) -> Response:
        """The main answer with the request's query parameters merged into ``Location``."""
        query = query_string.decode("latin-1")
        if _UNSAFE.search(query) or not query.isascii():
            query = quote(query, safe=_PRINTABLE.replace("#", ""))
        query = query.replace("#", "%23")
        extra = [
            pair
            for pair in query.split("&")
            if pair and unquote_plus(pair.partition("=")[0]) not in self._own_names
        ]
        if not extra:
            return self.main
        base = self._base
        separator = "" if base.endswith(("?", "&")) else ("&" if "?" in base else "?")
        location = base + separator + "&".join(extra) + self._fragment
        if len(location) > MAX_LOCATION:
            return self.main
        return _redirect(self.main[0]["status"], location, self._cache_control)


def no_answer(scope: Scope) -> Answer | None:
    """``hot_path``'s stand-in: every request goes to the handler."""
    return None


class HotCounters:
    """Served statuses as plain ints; ``fold`` (on the resources' timer) moves them to REDIRECTS."""

    __slots__ = ("_children", "served")

    def __init__(self) -> None:
        self.served = [0] * len(STATUSES)
        self._children = [REDIRECTS.labels(status=str(status)) for status in STATUSES]

    def fold(self) -> None:
        served = self.served[:]  # zeroed in place: the C hot path holds the list
        self.served[:] = [0] * len(STATUSES)
        for child, count in zip(self._children, served):
            if count:
                child.inc(count)


class RedirectDeps(Protocol):
    """What the redirect handler needs of the worker's resources (``edge.resources.Resources``
    has it; tests hand in their own)."""

    @property
    def links(self) -> LinkStore[Target]: ...

    @property
    def clicks(self) -> Recorder: ...

    @property
    def clock(self) -> Clock: ...

    def every_second(self, callback: Callable[[], None]) -> None: ...


class RedirectHandler:
    """The ASGI callable ``edge.app`` sends every ``/{one segment}`` request to."""

    def __init__(self, resources: RedirectDeps) -> None:
        self.links = resources.links
        self.clicks = resources.clicks
        self.sync = self.clicks.sync
        self.add = self.clicks.add
        self.clock = resources.clock
        self.counters = HotCounters()
        self._handoff_logged_at = float("-inf")
        resources.every_second(self.counters.fold)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        if method != "GET" and method != "HEAD":
            return await self._send(METHOD_NOT_ALLOWED, method, send)
        code = scope["path"][1:]
        target = self.links.cached(code)
        if target is MISSING:
            if CODE.fullmatch(code) is None:
                return await self._send(NOT_FOUND, method, send)
            try:
                target = await self.links.fetch(code)
            except StoreUnavailable:
                return await self._send(UNAVAILABLE, method, send)
        if target is None:
            return await self._send(NOT_FOUND, method, send)
        if target.expires_at is not None and target.expires_at <= self.clock.wall:
            response = target.expired
        elif target.forward and scope["query_string"]:
            response = target.with_query(scope["query_string"])
        else:
            response = target.main
        location = response[2]
        if location is not None:
            if self.sync:
                await self._record_now(target.link, scope, location)
            else:  # ClickRecorder.record, inlined: the encoder's own call, no Python frame
                try:
                    if self.add(target.link, scope, location):
                        self.clicks.batch_full()
                except Exception:  # noqa: BLE001 -- a click that could not be encoded; counted
                    self.clicks.add_failed(target.link)
        # _send, inlined: this is the path every served redirect takes
        self.counters.served[response[3]] += 1
        await send(response[0])
        await send(response[1] if method != "HEAD" else _EMPTY_BODY)

    async def _send(self, response: Response, method: str, send: Send) -> None:
        self.counters.served[response[3]] += 1
        await send(response[0])
        await send(response[1] if method != "HEAD" else _EMPTY_BODY)

    async def _record_now(self, link: LinkRecord, scope: Scope, location: str) -> None:
        try:
            await self.clicks.record_now(link, scope, location)
        except Exception:  # noqa: BLE001 -- the recorder promises not to raise; fail open
            self._handoff_failed()

    def hot_path(self, reserved: frozenset[str]) -> Callable[[Scope], Answer | None]:
        """``answer(scope)``: this handler's work for a GET/HEAD of a code in the local cache, in
        one C call (``edge._clickfast.Hot``), returning the two messages to send; None for every
        other request, which the handler itself then answers. Codes in ``reserved`` are never
        answered. A stand-in that always says None when the C module was not built, clicks are
        recorded synchronously or encoded in Python (``CLICK_ENCODER=python``)."""
        encoder = self.clicks.encoder
        if _clickfast is None or self.sync or not isinstance(encoder, _clickfast.Encoder):
            return no_answer
        hot = _clickfast.Hot(
            entries=self.links.cache.entries,
            clock=self.clock,
            tiers=self.links.tiers,
            local=LOCAL,
            served=self.counters.served,
            reserved=reserved,
            encoder=encoder,
            batch_full=self.clicks.batch_full,
            add_failed=self.clicks.add_failed,
            empty_body=_EMPTY_BODY,
        )
        return hot.answer

    def _handoff_failed(self) -> None:
        CLICKS_DROPPED.labels(reason="handoff_error").inc()
        if self.clock.now - self._handoff_logged_at >= 60:
            self._handoff_logged_at = self.clock.now
            log.exception("click recorder raised; click dropped (logged at most once a minute)")
