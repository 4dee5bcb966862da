# Types of the C module edge/_clickfast.c (edge.clickencoder says what it is for).
from collections.abc import Callable, Mapping
from typing import Any

from edge.records import LinkRecord

class Encoder:
    fallback: Callable[..., None]
    pending: int
    limit: int
    def __init__(
        self,
        *,
        fallback: Callable[..., None],
        request_tail: Callable[..., tuple[bool, bytes]],
        client_ip: Callable[[str, list[str]], str],
        prefetch_header: Callable[[bytes, bytes], bool],
        prefetch_names: tuple[bytes, ...],
        link_part: Callable[[int, int, str, str], bytes],
        utc_day: Callable[[int], str],
        counter_field: Callable[[int, str, bool], str],
        dumps: Callable[[Any], bytes],
        layout: tuple[bytes, bytes, bytes, bytes, bytes],
        tails_kept: int,
        tails_bytes: int,
        tail_cuts: tuple[int, int, int, int, int],
        tail_overhead: int,
        links_kept: int,
    ) -> None: ...
    def add(
        self,
        ts: float,
        link: LinkRecord,
        scope: Mapping[str, Any],
        location: str,
        counts: dict[str, int],
        events: list[bytes],
    ) -> None: ...
    def seed(self, high: int, low: int) -> None: ...
    def record(self, link: LinkRecord, scope: Mapping[str, Any], location: str) -> bool: ...
    def take(self) -> tuple[int, bytes, bytes] | None: ...

class Hot:
    def __init__(
        self,
        *,
        entries: dict[str, Any],
        clock: Any,
        tiers: list[int],
        local: int,
        served: list[int],
        reserved: frozenset[str],
        encoder: Encoder,
        batch_full: Callable[[], None],
        add_failed: Callable[[LinkRecord, BaseException | None], None],
        empty_body: dict[str, Any],
    ) -> None: ...
    def answer(self, scope: Mapping[str, Any]) -> tuple[Any, ...] | None: ...
