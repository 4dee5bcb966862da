"""Request bodies: JSON only, read through the body cap, checked field by field.

A body that is not JSON (415 for another media type, 422 for malformed JSON), has unknown fields
or holds a wrong type or value is refused whole with a 422 listing the fields at fault (the first
``MAX_FIELD_ERRORS``, bad values before unknown names, and a count of the rest); nothing is stored
from it. A body of a million unknown keys costs a count, not a million error objects.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from datetime import datetime
from typing import Any

import orjson
from starlette.requests import Request

from edge.api import validation
from edge.api.problems import MAX_FIELD_ERRORS, Problem

MAX_BULK_ITEMS = 1000
UNKNOWN_FIELD = "unknown field"
MAX_SHOWN_NAME = 64  # characters of an unknown field's name echoed back


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


def _editable(allow_private: bool) -> dict[str, Callable[[object], Any]]:
    """Field -> checker, for the fields both create and PATCH accept."""

    def target(field: str) -> Callable[[object], str]:
        return lambda value: validation.target_url(value, field, allow_private=allow_private)

    return {
        "url": target("url"),
        "redirect_type": validation.redirect_type,
        "expires_at": _nullable(validation.expires_at),
        "expired_url": _nullable(target("expired_url")),
        "forward_query": lambda value: validation.boolean(value, "forward_query"),
        "tags": lambda value: tuple(validation.tags(value)),
        "disabled": lambda value: validation.boolean(value, "disabled"),
    }


_EDITABLE = {allow_private: _editable(allow_private) for allow_private in (False, True)}
CREATE_FIELDS = ("url", "code", *[name for name in _EDITABLE[False] if name != "url"])
PATCH_FIELDS = tuple(_EDITABLE[False])


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


@dataclasses.dataclass(slots=True)
class _Errors:
    """The fields at fault in one body: errors about known fields, then unknown names (the first
    ``MAX_FIELD_ERRORS`` of them built, the others only counted)."""

    allowed: tuple[str, ...]
    fields: list[dict[str, str]] = dataclasses.field(default_factory=list)
    unknown: list[dict[str, str]] = dataclasses.field(default_factory=list)
    unknown_omitted: int = 0

    def add(self, field: str, message: str) -> None:
        self.fields.append({"field": field, "message": message})

    def check_names(self, body: object, also: tuple[str, ...] = ()) -> dict[str, Any]:
        """``body`` as an object; the names it has beyond ``allowed`` and ``also`` noted."""
        if not isinstance(body, dict):
            self.add("body", "must be a JSON object")
            return {}
        known = frozenset(self.allowed + also)
        names = (name for name in body if name not in known)
        self.unknown = [
            {"field": str(name)[:MAX_SHOWN_NAME], "message": UNKNOWN_FIELD}
            for name in itertools.islice(names, MAX_FIELD_ERRORS)
        ]
        self.unknown_omitted = sum(1 for _ in names)
        return body

    def raise_any(self) -> None:
        """A 422 listing the errors, if there are any."""
        errors = self.fields + self.unknown
        if not errors:
            return
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
        if len(errors) + self.unknown_omitted > 5:
            summary += f"; and {len(errors) + self.unknown_omitted - 5} more"
        if self.unknown:
            summary += f" (allowed fields: {', '.join(self.allowed)})"
        raise Problem(422, summary, errors=errors, errors_omitted=self.unknown_omitted)


def _collect(
    body: dict[str, Any], checkers: dict[str, Callable[[object], Any]], errors: _Errors
) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, check in checkers.items():
        if name not in body:
            continue
        try:
            values[name] = check(body[name])
        except Problem as problem:
            errors.fields.extend(problem.errors)
    return values


def new_link(
    body: object, reserved: frozenset[str], *, allow_private_targets: bool = False
) -> NewLink:
    """A create request; raises a 422 ``Problem`` listing the fields at fault."""
    errors = _Errors(CREATE_FIELDS)
    fields = errors.check_names(body)
    if isinstance(body, dict) and "url" not in body:
        errors.add("url", "is required")
    checkers = dict(
        _EDITABLE[allow_private_targets],
        code=lambda value: validation.custom_code(value, reserved),
    )
    values = _collect(fields, checkers, errors)
    errors.raise_any()
    return NewLink(**values)


def link_patch(body: object, *, allow_private_targets: bool = False) -> dict[str, Any]:
    """A PATCH request: the columns to change and their new values (``None`` clears)."""
    errors = _Errors(PATCH_FIELDS)
    fields = errors.check_names(body, also=("code",))
    if "code" in fields:
        errors.add("code", "a code never changes; create a new link instead")
    values = _collect(fields, _EDITABLE[allow_private_targets], errors)
    if not (errors.fields or errors.unknown) and not values:
        errors.add("body", f"give at least one of {', '.join(PATCH_FIELDS)}")
    errors.raise_any()
    return values


def bulk_items(body: object) -> list[Any]:
    """The ``links`` list of a bulk request (1 to 1000 items); the items are checked one by one."""
    errors = _Errors(("links",))
    items = errors.check_names(body).get("links")
    if not (errors.fields or errors.unknown):
        if not isinstance(items, list):
            errors.add("links", "is required: a list of link objects")
        elif not 1 <= len(items) <= MAX_BULK_ITEMS:
            errors.add("links", f"give 1 to {MAX_BULK_ITEMS} links per request")
    errors.raise_any()
    assert isinstance(items, list)
    return items
