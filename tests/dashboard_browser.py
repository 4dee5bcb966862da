"""Headless Chromium for the dashboard's tests: the system browser driven by Playwright for Python.

The browser is Debian's ``chromium`` at ``/usr/bin/chromium`` (``make test`` installs it when it
runs as root with apt); Playwright's own browser downloads are never used. Without either the
browser tests skip, saying what to install.

A ``Watched`` page records every dialog (answered by dismissing it), uncaught page error and
console error, so a test can assert that nothing a visitor sent ever executed.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "dashboard"


def browser_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed: pip install -e '.[dev]' (make test does)"
    if not os.access(CHROMIUM, os.X_OK):
        return (
            f"no Chromium at {CHROMIUM}: install Debian's chromium (apt-get install chromium; "
            "make test does when run as root) or point CHROMIUM at a Chromium binary"
        )
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    reason = browser_missing()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@dataclasses.dataclass
class Watched:
    """A page and everything it reported that a clean page never does."""

    page: Any
    origin: str = ""  # when set, a request anywhere else is a problem
    dialogs: list[str] = dataclasses.field(default_factory=list)
    elsewhere: list[str] = dataclasses.field(default_factory=list)
    page_errors: list[str] = dataclasses.field(default_factory=list)
    console_errors: list[str] = dataclasses.field(default_factory=list)
    allowed: list[re.Pattern[str]] = dataclasses.field(default_factory=list)

    def allow(self, pattern: str) -> None:
        """Console errors matching ``pattern`` are expected (e.g. the 401 of a wrong key)."""
        self.allowed.append(re.compile(pattern))

    def problems(self) -> list[str]:
        console = [m for m in self.console_errors if not any(p.search(m) for p in self.allowed)]
        return (
            [f"dialog: {d}" for d in self.dialogs]
            + [f"page error: {e}" for e in self.page_errors]
            + [f"console error: {c}" for c in console]
            + [f"request to another origin: {url}" for url in self.elsewhere]
        )


def watch(page: Any, origin: str = "") -> Watched:
    watched = Watched(page, origin)

    def on_request(request: Any) -> None:
        url: str = request.url
        if origin and not url.startswith((f"{origin}/", "data:")):
            watched.elsewhere.append(url)

    page.on("request", on_request)

    def on_dialog(dialog: Any) -> None:
        watched.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.on("pageerror", lambda error: watched.page_errors.append(str(error)))
    page.on(
        "console",
        lambda message: (
            watched.console_errors.append(f"{message.text} @ {message.location.get('url', '')}")
            if message.type == "error"
            else None
        ),
    )
    return watched


def screenshot(page: Any, name: str, *, full_page: bool = True) -> Path:
    """Save a screenshot under test-artifacts/dashboard/ (ignored by git)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    ignore = ARTIFACTS.parent / ".gitignore"
    if not ignore.exists():
        ignore.write_text("*\n")
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path
