"""A real browser: Debian's Chromium driven by Playwright (it downloads no browser of its own).

Screenshots go to ``build/screenshots/`` (or ``B24GATE_SCREENSHOTS``) for a person to look at.
Without Chromium the tests skip, except in CI (``CI`` set), where they fail.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright

from tests.api.conftest import (  # noqa: F401  (the gateway-and-sandbox fixtures)
    _no_retry_waits,
    make_stack,
)

CHROMIUM_NAMES = ("chromium", "chromium-browser")
# Off: the machine's closed network refuses Chromium's own background connections.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(
    os.environ.get("B24GATE_SCREENSHOTS", Path(__file__).parents[2] / "build" / "screenshots")
)


def chromium() -> str:
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("CI"):
        raise RuntimeError("Chromium is not installed (.ci/run installs Debian's `chromium`)")
    pytest.skip("Chromium is not installed (apt-get install chromium)")


@pytest.fixture(autouse=True)
def _screenshots() -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    executable = chromium()
    async with async_playwright() as pw:
        launched = await pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(locale="en-US")
    opened = await context.new_page()
    opened.set_default_timeout(15_000)
    try:
        yield opened
    finally:
        await context.close()


async def shot(page: Page, name: str) -> Path:
    """A full-page screenshot for review, named after the step."""
    path = SCREENSHOTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path
