"""Target, code and field validation (pure functions: no stores needed)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from edge.api import inputs, validation
from edge.api.problems import Problem

RESERVED = frozenset({"api", "healthz", "readyz", "metrics", "favicon.ico"})


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("https://example.com", "https://example.com"),
        ("HTTP://Example.COM/Path?x=1#frag", "http://example.com/Path?x=1#frag"),
        ("http://bücher.example/", "http://xn--bcher-kva.example/"),
        ("https://BÜCHER.example/ä?q=ü#ö", "https://xn--bcher-kva.example/%C3%A4?q=%C3%BC#%C3%B6"),
        ("https://example.com:8443/a", "https://example.com:8443/a"),
        ("http://[2606:4700:4700::ABCD]:8080/", "http://[2606:4700:4700::abcd]:8080/"),
        ("http://93.184.215.14/x", "http://93.184.215.14/x"),
        ("https://my_host.example/", "https://my_host.example/"),
        ("https://example.com/a%20b", "https://example.com/a%20b"),
    ],
)
def test_valid_targets_are_normalised(given: str, stored: str) -> None:
    assert validation.target_url(given) == stored


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ("javascript:alert(1)", "scheme must be http or https"),
        ("data:text/html,<script>alert(1)</script>", "scheme must be http or https"),
        ("ftp://example.com/", "scheme must be http or https"),
        ("//example.com", "scheme must be http or https"),
        ("example.com", "scheme must be http or https"),
        ("http://exa mple.com", "whitespace or control"),
        ("http://example.com/\r\nSet-Cookie:x", "whitespace or control"),
        ("http://example.com/\nx", "whitespace or control"),
        ("https://example.com\t", "whitespace or control"),
        ("https://example.com/\x00", "whitespace or control"),
        ("https://example.com/\u2028", "whitespace or control"),
        ("https://example.com/\u200b", "whitespace or control"),
        ("https://example.com/\x7f", "whitespace or control"),
        ("http:///path", "needs a host"),
        ("https://", "needs a host"),
        ("https://user:pass@example.com/", "user information"),
        ("https://bank.example@evil.example/", "user information"),
        ("https://example.com:99999/", "port"),
        ("https://example.com:0/", "port"),
        ("https://example.com:http/", "port"),
        ("http://[::zz]/", "IPv6"),
        ("http://☃.net/", "internationalised"),
        ("http://a..b/", "not a valid host"),
        ("http://-bad-.example/", "not a valid host"),
        ("http://example.com\\@evil.com/", "user information"),
        ("http://evil.com\\.example.com/", "not allowed"),
        ("http://ex%41mple.com/", "not allowed"),
        ("https://example.com/" + "a" * 3000, "at most 2048"),
        ("https://example.com/" + "ü" * 1000, "once encoded"),
    ],
)
def test_hostile_targets_are_refused(given: str, says: str) -> None:
    with pytest.raises(Problem) as caught:
        validation.target_url(given)
    assert caught.value.status == 422
    assert caught.value.errors[0]["field"] == "url"
    assert says in caught.value.errors[0]["message"]


@pytest.mark.parametrize("value", [None, 42, ["https://example.com"], {"url": "x"}])
def test_target_must_be_a_string(value: object) -> None:
    with pytest.raises(Problem):
        validation.target_url(value)


def test_expired_url_errors_name_their_field() -> None:
    with pytest.raises(Problem) as caught:
        validation.target_url("javascript:x", "expired_url")
    assert caught.value.errors[0]["field"] == "expired_url"


@pytest.mark.parametrize("code", ["abc", "a-b_C9", "x" * 64, "Healthzz"])
def test_custom_codes(code: str) -> None:
    assert validation.custom_code(code, RESERVED) == code


@pytest.mark.parametrize(
    ("code", "says"),
    [
        ("ab", "3 to 64"),
        ("x" * 65, "3 to 64"),
        ("a/b", "3 to 64"),
        ("a.b", "3 to 64"),
        ("héllo", "3 to 64"),
        ("a b", "3 to 64"),
        (123, "3 to 64"),
        ("api", "reserved"),
        ("API", "reserved"),
        ("Metrics", "reserved"),
    ],
)
def test_bad_codes(code: object, says: str) -> None:
    with pytest.raises(Problem) as caught:
        validation.custom_code(code, RESERVED)
    assert caught.value.status == 422 and says in caught.value.detail


def test_expires_at_accepts_rfc3339_only() -> None:
    assert validation.expires_at("2030-01-02T03:04:05Z") == datetime(
        2030, 1, 2, 3, 4, 5, tzinfo=UTC
    )
    parsed = validation.expires_at("2030-01-02t03:04:05.123456789+02:00")
    assert parsed.utcoffset() is not None and parsed.microsecond == 123456
    for bad in [
        "\u0662\u0660\u0663\u0660-01-02T03:04:05Z",
        "2030-01-02",
        "2030-01-02T03:04:05",
        "tomorrow",
        "2030-13-40T00:00:00Z",
        1893456000,
    ]:
        with pytest.raises(Problem):
            validation.expires_at(bad)


def test_redirect_type_refuses_bools_and_other_statuses() -> None:
    assert validation.redirect_type(301) == 301
    for bad in [True, 303, "301", 301.0]:
        with pytest.raises(Problem):
            validation.redirect_type(bad)


def test_tags() -> None:
    assert validation.tags(["a", "b c", "a"]) == ["a", "b c"]
    for bad in ["a", [1], [""], ["x" * 65], ["a\nb"], ["a\x00"], ["t"] * 33]:
        with pytest.raises(Problem):
            validation.tags(bad)


def test_new_link_lists_every_bad_field() -> None:
    with pytest.raises(Problem) as caught:
        inputs.new_link(
            {"url": "javascript:x", "code": "a", "redirect_type": 200, "colour": "red"}, RESERVED
        )
    fields = sorted(error["field"] for error in caught.value.errors)
    assert fields == ["code", "colour", "redirect_type", "url"]


@pytest.mark.parametrize("body", [[], "x", 1, None, {}, {"code": "abc"}])
def test_new_link_needs_an_object_with_url(body: object) -> None:
    with pytest.raises(Problem) as caught:
        inputs.new_link(body, RESERVED)
    assert caught.value.status == 422


def test_patch_refuses_code_and_empty_bodies() -> None:
    assert inputs.link_patch({"expires_at": None, "tags": []}) == {"expires_at": None, "tags": ()}
    for bad in [{}, {"code": "newcode"}, {"url": None}, {"forward_query": None}, [], {"x": 1}]:
        with pytest.raises(Problem):
            inputs.link_patch(bad)


def test_field_errors_are_bounded_and_bad_values_come_first() -> None:
    body = {f"u{i}": i for i in range(30)} | {"url": "javascript:x", "redirect_type": 1}
    with pytest.raises(Problem) as caught:
        inputs.new_link(body, RESERVED)
    problem = caught.value.body("/api/v1/links")
    assert [e["field"] for e in problem["errors"][:2]] == ["url", "redirect_type"]
    assert len(problem["errors"]) == 20 and problem["errors_omitted"] == 12
    assert "and 27 more" in problem["detail"] and "allowed fields: url, code" in problem["detail"]
    with pytest.raises(Problem) as caught:
        inputs.new_link({"url": "https://example.com/", "x": 1}, RESERVED)
    assert "errors_omitted" not in caught.value.body("/api/v1/links")
