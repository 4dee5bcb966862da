"""The link as the redirect path sees it: a small immutable record, cached per worker and in Redis.

Records come from Redis or Postgres, and whoever can write either could hand the edge a record the
API would never have written (a ``javascript:`` target, a header-splitting one, a wrong type).
``LinkRecord.fault`` checks what the API validates that is cheap to check, once, when a record
enters a worker's cache; a faulty record is answered 404.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

import orjson

REDIRECT_TYPES = (301, 302, 307, 308)
MAX_URL_LENGTH = 2048

# http(s), a host (a name or a bracketed IPv6 literal; no user information), an optional port,
# then no whitespace, control or invisible format characters.
_TARGET = re.compile(
    r"(?i:https?)://(?:[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?"
    r"(?:[/?#][^\s\x00-\x1f\x7f-\x9f\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u206f\ufeff]*)?"
)


def _is_target(url: object) -> bool:
    return isinstance(url, str) and len(url) <= MAX_URL_LENGTH and bool(_TARGET.fullmatch(url))


@dataclasses.dataclass(frozen=True, slots=True)
class LinkRecord:
    id: int
    account_id: int
    code: str
    url: str  # validated at write time: http(s), host, no control characters or whitespace
    redirect_type: int = 302
    expires_at: float | None = None  # Unix epoch seconds
    expired_url: str | None = None
    forward_query: bool = False
    disabled: bool = False
    # The row's updated_at in microseconds: a later edit has a larger one (edge.linkstore compares
    # a Redis record's with the edits it has seen; a record written before versions had 0).
    version: int = 0

    def to_json(self) -> bytes:
        return orjson.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, raw: bytes | str) -> LinkRecord:
        data: dict[str, Any] = orjson.loads(raw)
        return cls(**data)

    def fault(self) -> str | None:
        """The first field the API could not have stored as it is here, or ``None``."""
        if not _is_target(self.url):
            return "url"
        if self.expired_url is not None and not _is_target(self.expired_url):
            return "expired_url"
        if type(self.redirect_type) is not int or self.redirect_type not in REDIRECT_TYPES:
            return "redirect_type"
        if self.expires_at is not None and (
            type(self.expires_at) not in (int, float) or math.isnan(self.expires_at)
        ):
            return "expires_at"
        if type(self.id) is not int or type(self.account_id) is not int:
            return "id"
        if not isinstance(self.code, str):
            return "code"
        if type(self.forward_query) is not bool or type(self.disabled) is not bool:
            return "flags"
        if type(self.version) is not int:
            return "version"
        return None
