"""The request headers of the "realistic headers" rows, for ``headers.lua``: seeded, no network.

Real traffic to a short link carries many user agents, referrers and languages; the edge keeps
per-worker caches of what it derives from them, so a bench that sends one header set measures only
those caches. The file lists, each from the most to the least popular (``headers.lua`` picks with
Zipf popularity, weight 1/rank): ``USER_AGENTS`` browser user agents of several families, versions
and systems, with a few crawlers among them; ``REFERRERS`` referrers (search engines, social sites,
mail, blogs and news pages, with paths and query strings); ``LANGUAGES`` Accept-Language values.
"""

from __future__ import annotations

import random
from pathlib import Path

USER_AGENTS = 400
REFERRERS = 3000
LANGUAGES = 40

_SYSTEMS = (
    "Windows NT 10.0; Win64; x64",
    "Windows NT 10.0; WOW64",
    "Macintosh; Intel Mac OS X 10_15_7",
    "Macintosh; Intel Mac OS X 14_4_1",
    "X11; Linux x86_64",
    "X11; Ubuntu; Linux x86_64",
    "X11; CrOS x86_64 15633.69.0",
)
_PHONES = ("Pixel 8", "Pixel 7a", "SM-S918B", "SM-A546B", "moto g(60)", "2201116SG", "CPH2449")
_CRAWLERS = (
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
    "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
    "Twitterbot/1.0",
    "TelegramBot (like TwitterBot)",
    "WhatsApp/2.23.20.0",
    "curl/8.5.0",
    "python-requests/2.31.0",
    "Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)",
)
_SITES = (
    "https://www.google.com/",
    "https://www.bing.com/",
    "https://duckduckgo.com/",
    "https://t.co/",
    "https://www.facebook.com/",
    "https://l.facebook.com/",
    "https://www.linkedin.com/",
    "https://www.reddit.com/r/",
    "https://news.ycombinator.com/item?id=",
    "https://mail.google.com/",
    "https://outlook.live.com/",
    "https://www.instagram.com/",
)
_LANGUAGES = (
    "en-US", "en-GB", "de-DE", "fr-FR", "es-ES", "es-MX", "pt-BR", "it-IT", "nl-NL", "pl-PL",
    "ru-RU", "tr-TR", "ja-JP", "ko-KR", "zh-CN", "zh-TW", "sv-SE", "da-DK", "fi-FI", "nb-NO",
    "cs-CZ", "hu-HU", "ro-RO", "uk-UA", "el-GR", "he-IL", "ar-SA", "hi-IN", "id-ID", "th-TH",
    "vi-VN", "ms-MY", "fr-CA", "en-CA", "en-AU", "en-IN", "de-AT", "de-CH", "pt-PT", "ca-ES",
)  # fmt: skip


def _version(rng: random.Random, parts: int) -> str:
    return ".".join(str(rng.randrange(0, 6000 if i else 130)) for i in range(parts))


def user_agents(count: int, rng: random.Random) -> list[str]:
    """``count`` distinct user agents: browsers, and one crawler in forty."""
    agents: dict[str, None] = {}
    while len(agents) < count:
        system = rng.choice(_SYSTEMS)
        phone = f"Linux; Android {rng.randrange(10, 15)}; {rng.choice(_PHONES)}"
        ios = f"{rng.randrange(15, 18)}_{rng.randrange(0, 7)}"
        agent = rng.choice(
            [
                (
                    f"Mozilla/5.0 ({system}) AppleWebKit/537.36 (KHTML, like Gecko) "
                    f"Chrome/{_version(rng, 4)} Safari/537.36"
                ),
                (
                    f"Mozilla/5.0 ({phone}) AppleWebKit/537.36 (KHTML, like Gecko) "
                    f"Chrome/{_version(rng, 4)} Mobile Safari/537.36"
                ),
                (
                    f"Mozilla/5.0 ({system}; rv:{_version(rng, 2)}) Gecko/20100101 "
                    f"Firefox/{_version(rng, 2)}"
                ),
                (
                    f"Mozilla/5.0 (iPhone; CPU iPhone OS {ios} like Mac OS X) AppleWebKit/605.1.15 "
                    f"(KHTML, like Gecko) Version/{_version(rng, 2)} Mobile/15E148 Safari/604.1"
                ),
                (
                    f"Mozilla/5.0 ({system}) AppleWebKit/537.36 (KHTML, like Gecko) "
                    f"Chrome/{_version(rng, 4)} Safari/537.36 Edg/{_version(rng, 4)}"
                ),
                (
                    f"Mozilla/5.0 (iPhone; CPU iPhone OS {ios} like Mac OS X) AppleWebKit/605.1.15 "
                    f"(KHTML, like Gecko) Mobile/15E148 Instagram {_version(rng, 4)}"
                ),
                (
                    f"Mozilla/5.0 ({phone}) AppleWebKit/537.36 (KHTML, like Gecko) "
                    f"SamsungBrowser/{_version(rng, 2)} Chrome/{_version(rng, 4)} Mobile Safari/537.36"
                ),
            ]
            if rng.random() >= 1 / 40
            else list(_CRAWLERS)
        )
        agents[agent] = None
    return list(agents)


def referrers(count: int, rng: random.Random) -> list[str]:
    """``count`` distinct referrers: sites' home pages, then pages with paths and queries."""
    found: dict[str, None] = dict.fromkeys(_SITES[:count])
    words = ("launch", "pricing", "guide", "news", "review", "2026", "weekly", "deals", "how-to")
    while len(found) < count:
        if rng.random() < 0.5:
            site = rng.choice(_SITES)
            tail = str(rng.randrange(10**7)) if site.endswith("=") else rng.choice(words)
            url = site + tail
        else:
            slug = "-".join(rng.sample(words, 3))
            url = f"https://blog{rng.randrange(800)}.example.com/{slug}?utm_source=newsletter"
        found[url] = None
    return list(found)


def languages(count: int, rng: random.Random) -> list[str]:
    """``count`` Accept-Language values, each a main language with a fallback or two."""
    values: dict[str, None] = {}
    while len(values) < min(count, len(_LANGUAGES)):
        main = rng.choice(_LANGUAGES)
        base = main.split("-")[0]
        values[f"{main},{base};q=0.9" + (",en;q=0.8" if base != "en" else "")] = None
    return list(values)


def write(path: Path, *, seed: int = 7) -> Path:
    """The headers file ``headers.lua`` reads: ``kind<TAB>value`` lines, most popular first."""
    rng = random.Random(seed)
    lines = [f"ua\t{value}" for value in user_agents(USER_AGENTS, rng)]
    lines += [f"referer\t{value}" for value in referrers(REFERRERS, rng)]
    lines += [f"language\t{value}" for value in languages(LANGUAGES, rng)]
    path.write_text("\n".join(lines) + "\n")
    return path
