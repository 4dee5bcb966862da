"""Request bodies: JSON only, read through the body cap, checked field by field.

A body that is not JSON (415 for another media type, 422 for malformed JSON), has unknown fields
or holds a wrong type or value is refused whole with a 422 listing every field at fault; nothing
is stored from it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime
from typing import Any

import orjson
from starlette.requests import Request

from edge.api import validation
from edge.api.problems import Problem

MAX_BULK_ITEMS = 1000


@dataclasses.dataclass(frozen=True, slots=True)
class NewLink:
    url: str
    code: str | None = None  # None: generate one
    redirect_type: int = 302
    expires_at: datetime | None = None
    expired_url: str | None = None
    forward_query: bool = False
    tags: tuple[str, ...] = ()
    disabled: bool = False


def _nullable(check: Callable[[object], Any]) -> Callable[[object], Any]:
    return lambda value: None if value is None else check(value)


# Field -> checker, for the fields both create and PATCH accept.
_EDITABLE: dict[str, Callable[[object], Any]] = {
    "url": validation.target_url,
    "redirect_type": validation.redirect_type,
    "expires_at": _nullable(validation.expires_at),
    "expired_url": _nullable(lambda value: validation.target_url(value, "expired_url")),
    "forward_query": lambda value: validation.boolean(value, "forward_query"),
    "tags": lambda value: tuple(validation.tags(value)),
    "disabled": lambda value: validation.boolean(value, "disabled"),
}
CREATE_FIELDS = ("url", "code", *[name for name in _EDITABLE if name != "url"])
PATCH_FIELDS = tuple(_EDITABLE)


async def json_body(request: Request) -> Any:
    """The parsed JSON body; 415 when it is not sent as JSON, 422 when it does not parse."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise Problem(
            415,
            "send the body as JSON with Content-Type: application/json "
            f"(got {media_type or 'none'!r})",
        )
    raw = await request.body()
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Problem(
            422,
            f"the body is not valid JSON: {exc}",
            errors=[{"field": "body", "message": "not valid JSON"}],
        ) from None


def _check_fields(
    body: object, allowed: tuple[str, ...]
) -> tuple[dict[str, Any], list[dict[str, str]]]:
    if not isinstance(body, dict):
        return {}, [{"field": "body", "message": "must be a JSON object"}]
    errors = [
        {"field": str(name)[:64], "message": f"unknown field; allowed: {', '.join(allowed)}"}
        for name in body
        if name not in allowed
    ]
    return body, errors


def _collect(
    body: dict[str, Any], checkers: dict[str, Callable[[object], Any]]
) -> tuple[dict[str, Any], list[dict[str, str]]]:
    values: dict[str, Any] = {}
    errors: list[dict[str, str]] = []
    for name, check in checkers.items():
        if name not in body:
            continue
        try:
            values[name] = check(body[name])
        except Problem as problem:
            errors.extend(problem.errors)
    return values, errors


def _raise(errors: list[dict[str, str]]) -> None:
    if errors:
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
        raise Problem(422, summary, errors=errors)


def new_link(body: object, reserved: frozenset[str]) -> NewLink:
    """A create request; raises a 422 ``Problem`` listing every field at fault."""
    fields, errors = _check_fields(body, CREATE_FIELDS)
    if isinstance(body, dict) and "url" not in body:
        errors.append({"field": "url", "message": "is required"})
    checkers = dict(_EDITABLE, code=lambda value: validation.custom_code(value, reserved))
    values, field_errors = _collect(fields, checkers)
    _raise(errors + field_errors)
    return NewLink(**values)


def link_patch(body: object) -> dict[str, Any]:
    """A PATCH request: the columns to change and their new values (``None`` clears)."""
    fields, errors = _check_fields(body, PATCH_FIELDS)
    if "code" in fields:
        errors = [e for e in errors if e["field"] != "code"]
        errors.append(
            {"field": "code", "message": "a code never changes; create a new link instead"}
        )
    values, field_errors = _collect(fields, _EDITABLE)
    errors += field_errors
    if not errors and not values:
        errors.append(
            {"field": "body", "message": f"give at least one of {', '.join(PATCH_FIELDS)}"}
        )
    _raise(errors)
    return values


def bulk_items(body: object) -> list[Any]:
    """The ``links`` list of a bulk request (1 to 1000 items); the items are checked one by one."""
    fields, errors = _check_fields(body, ("links",))
    items = fields.get("links")
    if not errors and not isinstance(items, list):
        errors.append({"field": "links", "message": "is required: a list of link objects"})
    elif not errors and not 1 <= len(items) <= MAX_BULK_ITEMS:  # type: ignore[arg-type]
        errors.append(
            {"field": "links", "message": f"give 1 to {MAX_BULK_ITEMS} links per request"}
        )
    _raise(errors)
    assert isinstance(items, list)
    return items
