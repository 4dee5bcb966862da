"""Configuration, read once from the environment into a frozen, typed object.

Every variable the processes read is declared in ``FIELDS`` with its default; the README's
configuration table is the same list. ``Settings.from_env`` names the variable that is missing or
malformed when it fails. Tests build settings from a plain dict.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from typing import Any


class ConfigError(ValueError):
    """A configuration variable is missing or malformed."""


class Secret:
    """A string that never prints itself (a URL with a password, an API key)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def __repr__(self) -> str:
        return "Secret('**********')" if self._value else "Secret('')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def get(self) -> str:
        return self._value


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"expected true/false, got {raw!r}")


def _csv(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise ValueError(f"must be at least 1, got {value}")
    return value


def _non_negative_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError(f"must be 0 or more, got {value}")
    return value


def _positive_float(raw: str) -> float:
    value = float(raw)
    if value <= 0:
        raise ValueError(f"must be above 0, got {value}")
    return value


CLICK_ENCODERS = ("auto", "c", "python")


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    """Every knob of linkedge. Field names are the environment variable names, lower-cased."""

    # Stores. Empty means "start an embedded one" (``linkedge up``); the processes themselves
    # require them to be set.
    redis_url: Secret = Secret("")
    database_url: Secret = Secret("")
    clickhouse_url: Secret = Secret("")

    # Edge server.
    host: str = "127.0.0.1"
    port: int = 8000
    edge_workers: int = 0  # 0: the CPU count
    public_base_url: str = ""  # base of the short URLs the API returns; default http://HOST:PORT
    trusted_proxies: tuple[str, ...] = ()  # peers whose X-Forwarded-For is believed (IPs/CIDRs)
    # Peers the edge's /metrics answers (IPs/CIDRs): loopback and private ranges, where a scraper
    # runs; never a request that came through a proxy (X-Forwarded-For, Forwarded).
    metrics_allow: tuple[str, ...] = (
        "127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7",
    )  # fmt: skip

    # Redirect lookup tiers.
    cache_size: int = 100_000  # entries per worker, hits and misses together
    cache_ttl_s: float = 30.0  # a local entry is trusted this long without invalidation
    miss_ttl_s: float = 5.0  # unknown codes are remembered as misses this long
    cold_lookups_per_second: int = 100  # unknown codes a worker may look up in Postgres, per second
    redis_link_ttl_s: int = 86_400  # link records written back to Redis expire after this
    permanent_max_age_s: int = 3600  # Cache-Control max-age of 301/308 answers

    # API limits.
    max_body_bytes: int = 4 * 1024 * 1024
    rate_limit_per_minute: int = 600  # sustained API requests per key
    rate_limit_burst: int = 60  # requests a key may send at once above the sustained rate
    auth_lookups_per_minute: int = 600  # API keys one client IP may have looked up in Postgres
    auth_lookup_burst: int = 100  # ... at once, above that rate (cached keys are not counted)
    allow_private_targets: bool = False  # targets may name loopback, private and local hosts

    # Click recording.
    click_flush_interval_ms: int = 10
    click_flush_max_events: int = 1000
    click_shards: int = 8
    click_memory_limit: int = 200_000  # events kept in memory while Redis is down; then spooled
    click_memory_limit_bytes: int = 64 * 1024 * 1024  # ... and their bytes (counters and entries)
    click_spool_dir: str = ".linkedge/spool"
    click_spool_max_bytes: int = 512 * 1024 * 1024
    click_encoder: str = "auto"  # auto: the C encoder when built; c: it or fail; python

    # Aggregator and analytics.
    aggregate_interval_s: float = 1.0
    analytics_batch_size: int = 5000
    analytics_block_ms: int = 1000
    analytics_claim_idle_ms: int = 30_000
    store_raw_ip: bool = False
    visitor_salt_secret: Secret = Secret(
        ""
    )  # keys the daily visitor-hash salt; random per process if unset
    aggregator_metrics_port: int = (
        9101  # /metrics, /healthz, /readyz of the aggregator; 0: a free port
    )
    analytics_port: int = 9102  # metrics, health and the analytics read side; 0: a free port
    metrics_host: str = "127.0.0.1"  # address those two ports bind (0.0.0.0 in a pod)
    analytics_url: str = ""  # where other processes reach analytics (reconcile with embedded chdb)
    analytics_token: Secret = Secret("")  # shared secret of the analytics port's data routes

    # Observability.
    log_level: str = "INFO"
    prometheus_multiproc_dir: str = ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every field from ``environ`` (default ``os.environ``); unknown keys are ignored."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            name = field.name.upper()
            raw = env.get(name)
            if raw is None or (raw == "" and field.type != "str"):
                continue
            parse = _PARSERS[field.name]
            try:
                values[field.name] = parse(raw)
            except ValueError as exc:
                raise ConfigError(f"{name}: {exc}") from exc
        settings = cls(**values)
        if settings.click_shards > 16384:
            raise ConfigError("CLICK_SHARDS: at most 16384")
        if settings.click_encoder not in CLICK_ENCODERS:
            raise ConfigError(f"CLICK_ENCODER: one of {', '.join(CLICK_ENCODERS)}")
        return settings

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @property
    def base_url(self) -> str:
        if self.public_base_url:
            return self.public_base_url.rstrip("/")
        host = "localhost" if self.host in {"127.0.0.1", "0.0.0.0", "::"} else self.host
        return f"http://{host}:{self.port}"

    @property
    def workers(self) -> int:
        return self.edge_workers or os.cpu_count() or 1

    def require(self, *names: str) -> None:
        """Fail with a named error when a store URL this process needs is not set."""
        for name in names:
            if not getattr(self, name):
                raise ConfigError(f"{name.upper()} is not set")


def _parser_for(name: str, annotation: str) -> Callable[[str], Any]:
    if annotation == "Secret":
        return Secret
    if annotation == "bool":
        return _bool
    if annotation == "tuple[str, ...]":
        return _csv
    if annotation == "float":
        return _positive_float
    if annotation == "int":
        if name in {"click_flush_interval_ms", "edge_workers", "store_raw_ip"}:
            return _non_negative_int
        if name.endswith("_port") or name == "port":
            return _non_negative_int
        return _positive_int
    return str


_PARSERS: dict[str, Callable[[str], Any]] = {
    f.name: _parser_for(f.name, str(f.type)) for f in dataclasses.fields(Settings)
}
