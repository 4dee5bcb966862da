"""Turn a click event into a ClickHouse row: device, OS, browser, country, referrer, visitor hash.

Runs in the analytics process, never on the redirect. Every value is derived from the event alone
(the salt from the click's own day, not from the clock), so replaying an entry yields the very same
row, which is what lets ClickHouse's block deduplication and ``ReplacingMergeTree`` collapse it.

- Bot flag and reason come from the event's ``bot`` field, decided at the edge (``linkedge.bots``);
  they are not re-decided here. ``bot_name`` adds detail: ua-parser's family of a spider agent.
- Device type, OS and browser: ua-parser, cached per user agent.
- Country: iptocc, an IP-to-country table shipped inside the wheel (nothing fetched at run time).
- Visitor hash: ``sha256(daily salt || ip || ua)`` truncated to 16 hex digits, where the daily salt
  is ``HMAC-SHA256(secret, YYYYMMDD)``. The same visitor hashes alike within a UTC day and
  differently across days; without the secret a hash cannot be tied back to an IP.
- The raw IP is stored only when ``STORE_RAW_IP`` is on; otherwise the column stays empty.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import hmac
import ipaddress
import logging
import os
import uuid
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import iptocc
from ua_parser import parse as parse_user_agent

from linkedge.events import Click

log = logging.getLogger("linkedge.analytics")

SALT_SECRET_ENV = "VISITOR_SALT_SECRET"

COLUMNS = (
    "click_id",
    "ts",
    "link_id",
    "account_id",
    "code",
    "target",
    "is_bot",
    "bot_reason",
    "bot_name",
    "device_type",
    "os",
    "browser",
    "country",
    "referrer",
    "referrer_host",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_term",
    "utm_content",
    "accept_language",
    "host",
    "visitor_hash",
    "ip",
)
UTM_FIELDS = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")
_TS_MIN_MS, _TS_MAX_MS = 946_684_800_000, 4_102_444_800_000  # 2000-01-01 .. 2100-01-01
_MAX_TEXT = 2048  # a referer or target longer than this is cut; the edge already bounds headers


class Agent(NamedTuple):
    device_type: str  # desktop, mobile, tablet, bot, other
    os: str
    browser: str
    spider: str  # ua-parser's family when it names a spider, else ""


_TABLETS = ("ipad", "tablet", "kindle", "nexus 7", "nexus 9", "nexus 10", "sm-t", "playbook")
_DESKTOP_OS = ("windows", "mac os x", "linux", "ubuntu", "chrome os", "fedora", "freebsd", "debian")


@functools.lru_cache(maxsize=20_000)
def agent(user_agent: str) -> Agent:
    """Device type, OS and browser of a user agent (ua-parser), cached: agents repeat a lot."""
    if not user_agent:
        return Agent("other", "", "", "")
    parsed = parse_user_agent(user_agent)
    browser = parsed.user_agent.family if parsed.user_agent else ""
    os_name = parsed.os.family if parsed.os else ""
    device = parsed.device.family if parsed.device else ""
    lowered = user_agent.lower()
    if device == "Spider":
        return Agent("bot", os_name, browser, browser or "spider")
    if any(mark in lowered for mark in _TABLETS) or (
        os_name == "Android" and "mobile" not in lowered
    ):
        kind = "tablet"
    elif "mobi" in lowered or os_name in {"iOS", "Android"}:
        kind = "mobile"
    elif os_name.lower() in _DESKTOP_OS:
        kind = "desktop"
    else:
        kind = "other"
    return Agent(kind, os_name, browser, "")


def country(ip: str) -> str:
    """ISO 3166 alpha-2 country of an IP address, "" when unknown (private, malformed)."""
    if not ip:
        return ""
    try:
        return iptocc.country_code(ip) or ""
    except (ValueError, TypeError):
        return ""


def referrer_host(referer: str) -> str:
    if not referer:
        return ""
    try:
        return (urlsplit(referer).hostname or "").removeprefix("www.")
    except ValueError:
        return ""


def daily_salt(secret: bytes, day: str) -> bytes:
    """The salt of one UTC day ``YYYYMMDD``: HMAC(secret, day), so it rotates without storage."""
    return hmac.new(secret, day.encode(), hashlib.sha256).digest()


def visitor_hash(salt: bytes, ip: str, user_agent: str) -> str:
    digest = hashlib.sha256(salt + ip.encode() + b"\x00" + user_agent.encode()).hexdigest()
    return digest[:16]


def salt_secret(configured: str) -> bytes:
    """The visitor-hash secret (``VISITOR_SALT_SECRET``); a random one per process when unset.

    A random secret keeps raw IPs unrecoverable but makes hashes differ across restarts (and
    across several analytics processes), which overcounts unique visitors: set the variable.
    """
    if configured:
        return configured.encode()
    log.warning("%s is not set: visitor hashes use a random per-process secret", SALT_SECRET_ENV)
    return os.urandom(32)


def _normal_ip(ip: str) -> str:
    try:
        return str(ipaddress.ip_address(ip.strip()))
    except ValueError:
        return ""


class Enricher:
    """Builds the ``clicks`` row of a click; holds the secret and the per-day salt cache."""

    def __init__(self, secret: bytes, *, store_raw_ip: bool = False) -> None:
        self._secret = secret
        self._store_raw_ip = store_raw_ip
        self._salts: dict[str, bytes] = {}

    def salt(self, day: str) -> bytes:
        salt = self._salts.get(day)
        if salt is None:
            if len(self._salts) > 8:
                self._salts.clear()
            salt = self._salts[day] = daily_salt(self._secret, day)
        return salt

    def row(self, click: Click) -> list[Any]:
        """The row of ``click`` in ``COLUMNS`` order; ``ValueError`` when it cannot be stored."""
        if (
            not (0 <= click.link_id < 2**63 and 0 <= click.account_id < 2**63)
            or not _TS_MIN_MS <= click.ts_ms < _TS_MAX_MS
        ):
            raise ValueError(f"click {click.id!r} has an id or timestamp out of range")
        ip = _normal_ip(click.ip)
        ua = agent(click.user_agent)
        ts = datetime.datetime.fromtimestamp(click.ts_ms / 1000, tz=datetime.UTC)
        return [
            uuid.UUID(click.id),
            ts,
            click.link_id,
            click.account_id,
            click.code,
            click.target[:_MAX_TEXT],
            1 if click.bot else 0,
            click.bot,
            ua.spider,
            ua.device_type,
            ua.os,
            ua.browser,
            country(ip),
            click.referer[:_MAX_TEXT],
            referrer_host(click.referer),
            *(click.utm.get(name, "")[:_MAX_TEXT] for name in UTM_FIELDS),
            click.accept_language[:256],
            click.host[:256],
            visitor_hash(self.salt(click.day), ip or click.ip, click.user_agent),
            ip if self._store_raw_ip else "",
        ]

    def as_dict(self, click: Click) -> dict[str, Any]:
        return dict(zip(COLUMNS, self.row(click), strict=True))
