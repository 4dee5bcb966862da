"""What a click's event says about its request, read from the ASGI scope's parts.

The client IP (the peer, or ``X-Forwarded-For`` from a trusted proxy), the UTM parameters of the
query string, and per distinct set of request headers the bot reason and the event's second half
(``events.encode_tail``). ``edge.clicks`` calls these once per click or once per header set.
"""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import parse_qsl

from linkedge import bots
from linkedge.events import encode_tail
from linkedge.settings import ConfigError

UTM_KEYS = frozenset({"utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content"})
REFERER_MAX, FIELD_MAX = 2048, 256  # longer header and UTM values are cut

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def request_tail(
    agent: bytes,
    referer: bytes,
    language: bytes,
    host: bytes,
    query: bytes | None,
    method: str,
    prefetch: bool,
) -> tuple[bool, bytes]:
    """Whether a request with these headers is a bot click, and its event's ``encode_tail``."""
    user_agent = agent.decode("utf-8", "replace")[: bots.USER_AGENT_MAX]
    bot = bots.reason(method, user_agent, prefetch=prefetch)
    tail = encode_tail(
        user_agent,
        referer.decode("utf-8", "replace")[:REFERER_MAX],
        language.decode("latin-1")[:FIELD_MAX],
        host.decode("latin-1")[:FIELD_MAX],
        utm_params(query) if query else {},
        bot,
    )
    return bot != bots.HUMAN, tail


def trusted_networks(
    entries: tuple[str, ...], variable: str = "TRUSTED_PROXIES"
) -> tuple[Network, ...]:
    """``TRUSTED_PROXIES`` (or another ``variable``) as networks; a malformed entry is a
    ``ConfigError`` naming the variable and the entry."""
    try:
        return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)
    except ValueError as exc:
        raise ConfigError(f"{variable}: {exc}") from exc


def in_networks(address: str, networks: tuple[Any, ...]) -> bool:
    """Whether ``address`` (an IPv4-mapped IPv6 address as its IPv4 one) is in ``networks``."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == net.version and ip in net for net in networks)


def client_ip(peer: str, forwarded: list[str], networks: tuple[Any, ...]) -> str:
    """The client address: the peer, unless it is a trusted proxy; then the right-most address
    of ``X-Forwarded-For`` that is not itself a trusted proxy (the left-most when all are)."""
    if not forwarded or not networks or not in_networks(peer, networks):
        return peer
    address = peer
    for hop in reversed(",".join(forwarded).split(",")):
        hop = hop.strip()
        try:
            ipaddress.ip_address(hop)
        except ValueError:  # garbage from the client side: the last trusted hop is what we know
            break
        address = hop
        if not in_networks(hop, networks):
            break
    return address


def utm_params(query_string: bytes) -> dict[str, str]:
    """``utm_source``, ``utm_medium``, ``utm_campaign``, ``utm_term``, ``utm_content`` of a query
    string (the first of each, values cut to 256 characters)."""
    if b"utm_" not in query_string.lower():
        return {}
    utm: dict[str, str] = {}
    for key, value in parse_qsl(query_string.decode("utf-8", "replace")):
        key = key.lower()
        if key in UTM_KEYS and key not in utm:
            utm[key] = value[:FIELD_MAX]
    return utm
