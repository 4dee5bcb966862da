"""Synthetic enriched clicks for the analytics bench, as Arrow tables in ``clicks``' column order.

The rows look like what ``analytics/enrich.py`` writes, drawn with numpy from a seeded generator:
- links with Zipf popularity (weight 1/rank), ranks dealt alternately to the accounts;
- timestamps uniform over the last ``days`` days (milliseconds), click ids UUIDv7 of them;
- a few dozen countries, browser/OS/device combinations, referrers, UTM sources, mediums,
  campaigns and terms, each with a skewed popularity;
- ~10% bots: 8% crawlers (device ``bot``), 2% HEAD requests (``head``, a browser's agent);
- visitor hashes as the writer stores them (16 hex characters), one per person and UTC day, so a
  person on two days counts on each, as with the daily salt.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pyarrow as pa

DAY_MS = 86_400_000
COUNTRIES = {
    "US": 26, "IN": 8, "GB": 6, "DE": 6, "FR": 5, "BR": 5, "CA": 4, "JP": 4, "ES": 3, "IT": 3,
    "NL": 3, "AU": 3, "MX": 2, "PL": 2, "SE": 2, "KR": 2, "ID": 2, "TR": 2, "RU": 1, "CH": 1,
    "BE": 1, "AT": 1, "DK": 1, "NO": 1, "FI": 1, "IE": 1, "PT": 1, "AR": 1, "CO": 1, "ZA": 1,
    "NG": 1, "EG": 1, "PH": 1, "VN": 1, "SG": 1, "NZ": 1, "": 1,
}  # fmt: skip
# (device_type, os, browser, weight) of human visitors
AGENTS: list[tuple[str, str, str, int]] = [
    ("desktop", "Windows", "Chrome", 22), ("desktop", "Windows", "Edge", 7),
    ("desktop", "Windows", "Firefox", 3), ("desktop", "Mac OS X", "Chrome", 6),
    ("desktop", "Mac OS X", "Safari", 6), ("desktop", "Mac OS X", "Firefox", 1),
    ("desktop", "Linux", "Chrome", 2), ("desktop", "Linux", "Firefox", 1),
    ("desktop", "Chrome OS", "Chrome", 1), ("mobile", "Android", "Chrome Mobile", 20),
    ("mobile", "Android", "Samsung Internet", 4), ("mobile", "Android", "Firefox Mobile", 1),
    ("mobile", "iOS", "Mobile Safari", 16), ("mobile", "iOS", "Chrome Mobile iOS", 3),
    ("tablet", "iOS", "Mobile Safari", 3), ("tablet", "Android", "Chrome", 1),
    ("other", "Other", "Other", 1),
]  # fmt: skip
CRAWLERS = {"Googlebot": 40, "bingbot": 15, "Slackbot": 12, "Twitterbot": 10, "facebookexternalhit": 10,
            "LinkedInBot": 5, "AhrefsBot": 5, "DuckDuckBot": 3}  # fmt: skip
CRAWLER_SHARE, HEAD_SHARE = 0.08, 0.02
REFERRER_HOSTS = {
    "": 45, "google.com": 15, "t.co": 8, "l.facebook.com": 6, "linkedin.com": 4, "reddit.com": 4,
    "news.ycombinator.com": 3, "bing.com": 3, "duckduckgo.com": 2, "instagram.com": 2,
    "youtube.com": 2, "mail.google.com": 1,
}  # fmt: skip
TAIL_REFERRERS = 300  # blogs and forums: the remaining referrer share, each with a few pages
TAIL_SHARE = 0.05
PAGES = 8  # distinct referring pages per referrer host
UTM_SOURCES = {"": 65, "newsletter": 10, "twitter": 7, "facebook": 6, "google": 5, "linkedin": 4,
               "reddit": 2, "partner": 1}  # fmt: skip
UTM_MEDIUM = {"": "", "newsletter": "email", "twitter": "social", "facebook": "social",
              "google": "cpc", "linkedin": "social", "reddit": "social", "partner": "referral"}  # fmt: skip
CAMPAIGNS = 40
TERMS = 60
LANGUAGES = ["en-US,en;q=0.9", "en-GB,en;q=0.9", "de-DE,de;q=0.9", "fr-FR,fr;q=0.9", "es-ES,es;q=0.9",
             "pt-BR,pt;q=0.9", "ja-JP,ja;q=0.9", "hi-IN,hi;q=0.9,en;q=0.8", ""]  # fmt: skip
HOST = "lnk.example.com"

_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_NIBBLES = np.arange(60, -1, -4, dtype=np.uint64)


@dataclasses.dataclass(frozen=True)
class Links:
    """The links the clicks go to, in Zipf rank order (the first is the most popular)."""

    ids: npt.NDArray[np.uint64]
    accounts: npt.NDArray[np.uint64]
    codes: Sequence[str]
    targets: Sequence[str]

    def __len__(self) -> int:
        return len(self.codes)


def _weights(values: Sequence[float]) -> npt.NDArray[np.float64]:
    array = np.asarray(values, dtype=np.float64)
    normalised: npt.NDArray[np.float64] = array / array.sum()
    return normalised


def _pick(
    rng: np.random.Generator, n: int, weights: npt.NDArray[np.float64]
) -> npt.NDArray[np.int32]:
    cdf = np.cumsum(weights)
    picked: npt.NDArray[np.int32] = np.minimum(
        np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right"), len(cdf) - 1
    ).astype(np.int32)
    return picked


def _dictionary(indices: npt.NDArray[np.int32], values: Sequence[str]) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(
        pa.array(indices, pa.int32()), pa.array(list(values), pa.string())
    )


def _mix(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """splitmix64's finaliser: a well-spread 64-bit hash of each value."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _hex16(x: npt.NDArray[np.uint64]) -> pa.Array:
    """Each 64-bit value as 16 lowercase hex characters (a FixedString(16) visitor hash)."""
    digits = _HEX[((x[:, None] >> _NIBBLES) & np.uint64(15)).astype(np.uint8)]
    return pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(16), len(x), [None, pa.py_buffer(digits.tobytes())]
    )


def _uuid7(ts_ms: npt.NDArray[np.int64], rng: np.random.Generator) -> pa.Array:
    """UUIDv7 click ids of these millisecond timestamps, as 16 big-endian bytes each."""
    random = rng.integers(0, 2**63, size=(len(ts_ms), 2), dtype=np.int64).astype(np.uint64)
    high = (
        (ts_ms.astype(np.uint64) << np.uint64(16))
        | np.uint64(0x7000)
        | (random[:, 0] & np.uint64(0xFFF))
    )
    low = np.uint64(0x8000000000000000) | (random[:, 1] & np.uint64(0x3FFFFFFFFFFFFFFF))
    raw = np.stack([high, low], axis=1).astype(">u8").tobytes()
    return pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(16), len(ts_ms), [None, pa.py_buffer(raw)]
    )


class ClickGenerator:
    """Batches of synthetic clicks; the same ``seed`` gives the same clicks batch after batch."""

    def __init__(
        self, links: Links, *, now_ms: int, people: int, days: int = 35, seed: int = 11
    ) -> None:
        self.links = links
        self.now_ms = now_ms
        self.days = days
        self.people = max(1, people)  # distinct visitors over the whole run (before the daily salt)
        self.rng = np.random.default_rng(seed)
        self._link_weights = _weights([1.0 / (rank + 1) for rank in range(len(links))])
        self._countries = list(COUNTRIES)
        self._country_weights = _weights(list(COUNTRIES.values()))
        self._agent_weights = _weights([weight for *_, weight in AGENTS])
        self._crawlers = list(CRAWLERS)
        self._devices = [*sorted({device for device, _, _, _ in AGENTS}), "bot"]
        self._systems = sorted({system for _, system, _, _ in AGENTS})  # "Other" for crawlers too
        browsers = sorted({browser for _, _, browser, _ in AGENTS})
        self._browsers = browsers + self._crawlers
        self._agent_columns = np.array(
            [
                [self._devices.index(d), self._systems.index(o), browsers.index(b)]
                for d, o, b, _ in AGENTS
            ],
            np.int32,
        )
        self._crawler_weights = _weights(list(CRAWLERS.values()))
        hosts = list(REFERRER_HOSTS)
        tail = [f"blog{i}.example.net" for i in range(TAIL_REFERRERS)]
        self._referrer_hosts = hosts + tail
        tail_weights = [TAIL_SHARE / (i + 1) for i in range(TAIL_REFERRERS)]
        tail_weights = [w * TAIL_SHARE / sum(tail_weights) for w in tail_weights]
        head = [w * (1 - TAIL_SHARE) for w in _weights(list(REFERRER_HOSTS.values()))]
        self._referrer_weights = _weights(head + tail_weights)
        assert self._referrer_hosts[0] == ""  # direct visits: no referrer, one dictionary entry
        self._referrer_urls = [""] + [
            f"https://{host}/p/{page}" for host in self._referrer_hosts[1:] for page in range(PAGES)
        ]
        self._sources = list(UTM_SOURCES)
        self._source_weights = _weights(list(UTM_SOURCES.values()))
        self._mediums = sorted(set(UTM_MEDIUM.values()))
        self._source_medium = np.array(
            [self._mediums.index(UTM_MEDIUM[s]) for s in self._sources], np.int32
        )

    def batch(self, count: int) -> pa.Table:
        """``count`` clicks with the columns of ``analytics.enrich.COLUMNS``, in that order."""
        rng, links = self.rng, self.links
        n = count
        link = _pick(rng, n, self._link_weights)
        ts_ms = self.now_ms - rng.integers(1, self.days * DAY_MS, size=n, dtype=np.int64)
        kind = rng.random(n)
        crawler = kind < CRAWLER_SHARE
        head = (kind >= CRAWLER_SHARE) & (kind < CRAWLER_SHARE + HEAD_SHARE)
        agent = _pick(rng, n, self._agent_weights)
        crawler_name = np.where(crawler, _pick(rng, n, self._crawler_weights) + 1, 0).astype(
            np.int32
        )
        known = self._agent_columns[agent]
        device = np.where(crawler, len(self._devices) - 1, known[:, 0]).astype(np.int32)
        system = np.where(crawler, self._systems.index("Other"), known[:, 1]).astype(np.int32)
        first_crawler = len(self._browsers) - len(self._crawlers)
        browser = np.where(crawler, first_crawler + crawler_name - 1, known[:, 2]).astype(np.int32)
        reason = np.where(crawler, 1, np.where(head, 2, 0)).astype(np.int32)
        referrer_host = _pick(rng, n, self._referrer_weights)
        page = rng.integers(0, PAGES, size=n, dtype=np.int32)
        source = np.where(crawler, 0, _pick(rng, n, self._source_weights)).astype(np.int32)
        tagged = source > 0
        campaign = np.where(tagged, rng.zipf(1.5, size=n) % CAMPAIGNS + 1, 0).astype(np.int32)
        paid = source == self._sources.index("google")
        term = np.where(paid, rng.integers(1, TERMS + 1, size=n), 0).astype(np.int32)
        content = np.where(tagged, rng.integers(0, 4, size=n), 0).astype(np.int32)
        person = rng.integers(0, self.people, size=n, dtype=np.int64).astype(np.uint64)
        day = (ts_ms // DAY_MS).astype(np.uint64)
        visitor = _mix(person * np.uint64(1_000_003) + day)
        columns = {
            "click_id": _uuid7(ts_ms, rng),
            "ts": pa.array(ts_ms.astype("datetime64[ms]"), pa.timestamp("ms", tz="UTC")),
            "link_id": pa.array(links.ids[link], pa.uint64()),
            "account_id": pa.array(links.accounts[link], pa.uint64()),
            "code": _dictionary(link, links.codes),
            "target": _dictionary(link, links.targets),
            "is_bot": pa.array((reason > 0).astype(np.uint8), pa.uint8()),
            "bot_reason": _dictionary(reason, ["", "crawler", "head"]),
            "bot_name": _dictionary(crawler_name, ["", *self._crawlers]),
            "device_type": _dictionary(device, self._devices),
            "os": _dictionary(system, self._systems),
            "browser": _dictionary(browser, self._browsers),
            "country": _dictionary(_pick(rng, n, self._country_weights), self._countries),
            "referrer": _dictionary(
                np.where(referrer_host == 0, 0, (referrer_host - 1) * PAGES + page + 1).astype(
                    np.int32
                ),
                self._referrer_urls,
            ),
            "referrer_host": _dictionary(referrer_host, self._referrer_hosts),
            "utm_source": _dictionary(source, self._sources),
            "utm_medium": _dictionary(self._source_medium[source], self._mediums),
            "utm_campaign": _dictionary(
                campaign, ["", *(f"campaign-{i}" for i in range(1, CAMPAIGNS + 1))]
            ),
            "utm_term": _dictionary(term, ["", *(f"term {i}" for i in range(1, TERMS + 1))]),
            "utm_content": _dictionary(content, ["", "hero", "footer", "sidebar"]),
            "accept_language": _dictionary(
                rng.integers(0, len(LANGUAGES), size=n, dtype=np.int32), LANGUAGES
            ),
            "host": _dictionary(np.zeros(n, np.int32), [HOST]),
            "visitor_hash": _hex16(visitor),
            "ip": _dictionary(np.zeros(n, np.int32), [""]),
        }
        return pa.table(columns)
