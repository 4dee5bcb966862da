"""The link as the redirect path sees it: a small immutable record, cached per worker and in Redis."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson


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

    def to_json(self) -> bytes:
        return orjson.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, raw: bytes | str) -> LinkRecord:
        data: dict[str, Any] = orjson.loads(raw)
        return cls(**data)
