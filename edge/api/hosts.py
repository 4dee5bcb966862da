"""Which hosts a redirect target may name.

A short link hides its target, so the service refuses targets that are unsafe to hand to a
visitor's browser without the visitor seeing them:

- hosts of the visitor's own machine or network: loopback, private, link-local, unspecified,
  multicast, reserved and other not globally reachable addresses (IPv4, IPv6, and IPv4 inside
  IPv6: mapped, 6to4, NAT64), ``localhost`` and the special-use local names below, and single-label
  names, which only resolve inside a network. ``ALLOW_PRIVATE_TARGETS`` allows them for intranets;
- numeric hosts that are not a plain dotted quad (``0x7f.1``, ``2130706433``, ``017.0.0.1``,
  ``127.1``): browsers read them as IPv4 addresses (the WHATWG URL host parser), so they only serve
  to disguise one. Refused whatever the setting: the same address can be written as four decimals;
- labels that mix scripts (``exаmple`` with a Cyrillic ``а``), by the "highly restrictive" level of
  Unicode UTS 39: one script per label, or Latin with the Han-based sets of Japanese, Chinese and
  Korean. Script data comes from ``confusable_homoglyphs`` (the Unicode Scripts data); the IDNA
  2008 and UTS 46 rules themselves are the ``idna`` package's, applied when the host is encoded.

Hosts arrive normalised: lower-case ASCII, internationalised labels as punycode, IPv6 literals in
brackets.
"""

from __future__ import annotations

import ipaddress
import re

import idna
from confusable_homoglyphs import categories

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# Special-use names that resolve inside a network only (RFC 6761, RFC 6762, RFC 8375, and the
# .internal top-level domain ICANN reserved for private use); "localdomain" is the name most
# systems give their own domain in /etc/hosts.
_LOCAL_SUFFIXES = ("localhost", "local", "internal", "home.arpa", "localdomain")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# WHATWG URL: a host whose last label is a number (decimal, or 0x hex) is parsed as IPv4.
_NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")

_IGNORED_SCRIPTS = frozenset({"COMMON", "INHERITED"})
# UTS 39 section 5.2, "Highly Restrictive": a single script, or one of these sets.
_ALLOWED_MIXES = (
    frozenset({"LATIN", "HAN", "HIRAGANA", "KATAKANA"}),
    frozenset({"LATIN", "HAN", "BOPOMOFO"}),
    frozenset({"LATIN", "HAN", "HANGUL"}),
)

ALLOW_HINT = "the service redirects to public hosts only (its operator can allow others)"


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_kind(ip: Address) -> str | None:
    """What makes ``ip`` unfit for a public target (``"loopback"``, ``"private"``...), or ``None``.

    Python's ``ipaddress`` flags follow the IANA special-purpose address registries.
    """
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_ipv4(ip)
        if inner is not None and (kind := address_kind(inner)) is not None:
            return kind
    for kind, flag in (
        ("loopback", ip.is_loopback),
        ("unspecified", ip.is_unspecified),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("reserved", ip.is_reserved),
        ("private", ip.is_private),
    ):
        if flag:
            return kind
    return None if ip.is_global else "non-public"


def _address_refusal(host: str, ip: Address, allow_private: bool) -> str | None:
    kind = None if allow_private else address_kind(ip)
    if kind is None:
        return None
    article = "an" if kind[0] in "aeiou" else "a"
    return f"{host} is {article} {kind} address; {ALLOW_HINT}"


def _mixed_scripts(label: str) -> set[str] | None:
    scripts: set[str] = categories.unique_aliases(label) - _IGNORED_SCRIPTS
    if len(scripts) <= 1 or any(scripts <= mix for mix in _ALLOWED_MIXES):
        return None
    return scripts


def refusal(host: str, *, allow_private: bool) -> str | None:
    """Why a target may not name ``host`` (a message for the client), or ``None``."""
    if host.startswith("["):
        return _address_refusal(host, ipaddress.IPv6Address(host[1:-1]), allow_private)
    name = host.removesuffix(".")
    labels = name.split(".")
    if _NUMERIC_LABEL.fullmatch(labels[-1]):
        try:
            ipv4 = ipaddress.IPv4Address(name)
        except ValueError:
            return (
                f"{host!r} is a numeric host that browsers read as an IPv4 address; write an "
                "address as four decimal numbers (e.g. 93.184.215.14) or use a domain name"
            )
        return _address_refusal(host, ipv4, allow_private)
    if not allow_private:
        for suffix in _LOCAL_SUFFIXES:
            if name == suffix or name.endswith("." + suffix):
                return f"{host!r} is a local name ({suffix}); {ALLOW_HINT}"
        if len(labels) == 1:
            return f"{host!r} is a single-label name, reachable inside a network only; {ALLOW_HINT}"
    for label in labels:
        if not label.startswith("xn--"):
            continue
        try:
            shown = idna.decode(label)
        except UnicodeError as exc:  # idna.IDNAError is one
            return f"the host label {label!r} is not a valid internationalised label ({exc})"
        scripts = _mixed_scripts(shown)
        if scripts is not None:
            mixed = " and ".join(sorted(script.title() for script in scripts))
            return (
                f"the host label {shown!r} mixes {mixed} letters, a way to imitate another "
                "name (a Cyrillic 'а' in 'example'); write each label in one script"
            )
    return None
