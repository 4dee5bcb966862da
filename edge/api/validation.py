"""Values a client sends, checked and normalised before anything is stored.

Targets (``url`` and ``expired_url``) end up in a ``Location`` header, so a stored target is plain
ASCII with no whitespace or control characters at all: CR and LF can never reach a header. The
rules, each refused with a 422 naming the field:

- ``http`` or ``https`` only (no ``javascript:``, ``data:``, scheme-relative ``//host``);
- a host is required; internationalised hosts are stored as punycode (IDNA 2008 with UTS 46
  mapping, the ``idna`` package), IPv6 literals must parse;
- no user information at all: ``user:pass@`` leaks credentials into every share of the short link,
  and ``https://bank.example@evil.example/`` is a classic way to disguise a target;
- a port, when given, is 1-65535;
- the host is one the target policy allows (``edge.api.hosts``: public hosts only unless
  ``ALLOW_PRIVATE_TARGETS``, no disguised numeric hosts, no labels mixing scripts);
- at most 2048 characters, measured after normalisation;
- non-ASCII characters in the path, query and fragment are percent-encoded (UTF-8).
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, urlsplit

import idna

from edge import records
from edge.api import hosts
from edge.api.problems import Problem, invalid

# One definition each, shared with the edge's check of the records it loads.
MAX_URL_LENGTH = records.MAX_URL_LENGTH
REDIRECT_TYPES = records.REDIRECT_TYPES
CODE_PATTERN = re.compile(r"[A-Za-z0-9_-]{3,64}")
MAX_TAGS = 32
MAX_TAG_LENGTH = 64
MAX_OFFSET = timedelta(hours=15, minutes=59)  # the largest UTC offset Postgres accepts
# Python's datetime range, less its two ends: asyncpg writes those as -infinity and infinity and
# reads them back as naive datetimes.
_FIRST_INSTANT = datetime.min.replace(tzinfo=UTC)
_LAST_INSTANT = datetime.max.replace(tzinfo=UTC)

_ASCII_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})"
)
# Characters refused anywhere in a target or tag: controls, format characters, every kind of space.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zs", "Zl", "Zp"})


def has_refused_char(value: str) -> bool:
    """Whether ``value`` holds a character refused in targets and tags (``_REFUSED_CATEGORIES``,
    whitespace, ASCII controls and the space itself: a tag checks it with spaces replaced)."""
    return any(
        ch.isspace() or ord(ch) < 0x21 or unicodedata.category(ch) in _REFUSED_CATEGORIES
        for ch in value
    )


def _encode_non_ascii(part: str) -> str:
    if part.isascii():
        return part
    return "".join(ch if ch.isascii() else quote(ch, safe="") for ch in part)


def _normalise_host(host: str, field: str) -> str:
    if ":" in host:  # only IPv6 literals carry colons once urlsplit took the port off
        try:
            return f"[{ipaddress.IPv6Address(host).compressed}]"
        except ValueError:
            raise invalid(field, f"{host!r} is not a valid IPv6 address") from None
    if not host.isascii():
        try:
            host = idna.encode(host, uts46=True).decode("ascii")
        except idna.IDNAError as exc:
            raise invalid(
                field, f"host is not a valid internationalised domain name ({exc})"
            ) from None
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    if len(host) > 253 or not all(_ASCII_LABEL.fullmatch(label) for label in labels):
        raise invalid(field, f"{host!r} is not a valid host name")
    return host


def target_url(value: object, field: str = "url", *, allow_private: bool = False) -> str:
    """Check a redirect target and return its normalised, ASCII-only form.

    ``allow_private`` (``ALLOW_PRIVATE_TARGETS``) lets it name loopback, private and local hosts.
    """
    if not isinstance(value, str):
        raise invalid(field, "must be a string holding an http or https URL")
    if len(value) > MAX_URL_LENGTH:
        raise invalid(
            field, f"is {len(value)} characters long; at most {MAX_URL_LENGTH} are allowed"
        )
    if has_refused_char(value):
        raise invalid(
            field, "must not contain whitespace or control characters; percent-encode them (%20)"
        )
    try:
        parts = urlsplit(value)
    except ValueError as exc:  # e.g. a bracketed host that is not an IPv6 address
        raise invalid(field, f"is not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in {"http", "https"}:
        shown = f"{scheme!r}" if scheme else "none"
        raise invalid(
            field, f"scheme must be http or https (got {shown}), e.g. https://example.com/page"
        )
    if "@" in parts.netloc:
        raise invalid(field, "must not contain user information (user:password@); put it elsewhere")
    if "\\" in parts.netloc or "%" in parts.netloc:
        raise invalid(field, "the host part contains characters that are not allowed")
    host = parts.hostname
    if not host:
        raise invalid(field, "needs a host, e.g. https://example.com/")
    try:
        port = parts.port
    except ValueError:
        raise invalid(field, "port must be a number from 1 to 65535") from None
    if port == 0:
        raise invalid(field, "port must be a number from 1 to 65535")
    host = _normalise_host(host, field)
    refusal = hosts.refusal(host, allow_private=allow_private)
    if refusal is not None:
        raise invalid(field, refusal)
    netloc = host + (f":{port}" if port is not None else "")
    result = f"{scheme}://{netloc}{_encode_non_ascii(parts.path)}"
    if parts.query or value.endswith("?"):
        result += "?" + _encode_non_ascii(parts.query)
    if parts.fragment:
        result += "#" + _encode_non_ascii(parts.fragment)
    if len(result) > MAX_URL_LENGTH:
        raise invalid(
            field, f"is {len(result)} characters long once encoded; at most {MAX_URL_LENGTH}"
        )
    return result


def custom_code(value: object, reserved: frozenset[str]) -> str:
    """A code the client chose: 3-64 of ``[A-Za-z0-9_-]``, not a reserved path of the app."""
    if not isinstance(value, str) or not CODE_PATTERN.fullmatch(value):
        raise invalid("code", "must be 3 to 64 characters of A-Z, a-z, 0-9, '_' and '-'")
    if value.lower() in reserved:
        raise invalid("code", f"{value!r} is reserved by the service; choose another code")
    return value


def path_code(value: str) -> str:
    """A code in a URL path; anything that could never be stored is simply not found."""
    if not CODE_PATTERN.fullmatch(value):
        raise Problem(404, f"no link with code {value!r}")
    return value


def redirect_type(value: object) -> int:
    if type(value) is not int or value not in REDIRECT_TYPES:
        raise invalid("redirect_type", "must be one of 301, 302, 307, 308")
    return value


def expires_at(value: object) -> datetime:
    """An RFC 3339 instant with an offset (e.g. ``2030-01-31T12:00:00Z``), returned in UTC.

    The offset is at most ``MAX_OFFSET`` either way (Postgres refuses a larger displacement), and
    the instant in UTC falls within years 1 to 9999, the range of Python's ``datetime`` and so of
    what asyncpg can read back (Postgres itself would store year 10000, and every read of the
    account's links would then fail), its two ends excluded (see ``_FIRST_INSTANT``).
    """
    field = "expires_at"
    message = "must be an RFC 3339 timestamp with an offset, e.g. 2030-01-31T12:00:00Z"
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise invalid(field, message)
    text = value.upper().replace(" ", "T").replace("Z", "+00:00")
    if "." in text:  # Python keeps microseconds: cut nanoseconds
        head, _, tail = text.partition(".")
        digits, offset = tail[:-6], tail[-6:]
        text = f"{head}.{digits[:6].ljust(6, '0')}{offset}"
    hours, minutes = int(text[-5:-3]), int(text[-2:])
    if minutes > 59 or timedelta(hours=hours, minutes=minutes) > MAX_OFFSET:
        raise invalid(
            field,
            f"the UTC offset {value[-6:]} is out of range: at most ±15:59 (what Postgres "
            "accepts), e.g. -05:00 or Z",
        )
    try:
        instant = datetime.fromisoformat(text)
    except ValueError:
        raise invalid(field, f"{message}; {value!r} is not a real date and time of day") from None
    try:
        instant = instant.astimezone(UTC)
    except OverflowError:
        instant = _FIRST_INSTANT  # refused just below
    if not _FIRST_INSTANT < instant < _LAST_INSTANT:
        raise invalid(
            field,
            "must fall within years 1 to 9999 once converted to UTC: after "
            "0001-01-01T00:00:00Z and before 9999-12-31T23:59:59.999999Z",
        )
    return instant


def boolean(value: object, field: str) -> bool:
    if not isinstance(value, bool):
        raise invalid(field, "must be true or false")
    return value


def tag(value: object, field: str = "tag") -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_TAG_LENGTH:
        raise invalid(field, f"a tag is a string of 1 to {MAX_TAG_LENGTH} characters")
    if has_refused_char(value.replace(" ", "x")):
        raise invalid(field, "a tag must not contain control characters or line breaks")
    return value


def tags(value: object) -> list[str]:
    if not isinstance(value, list):
        raise invalid("tags", "must be a list of strings")
    if len(value) > MAX_TAGS:
        raise invalid("tags", f"at most {MAX_TAGS} tags per link")
    return list(dict.fromkeys(tag(item, "tags") for item in value))
