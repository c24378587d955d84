"""`b24gate demo` prints where its admin page is and how to sign in; every page of it works
in a real browser against the demo's sandbox portal, with nothing refused by the page's own
Content-Security-Policy (a violation is a console error)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from playwright.async_api import ConsoleMessage, Page, expect

from b24gate.testing import free_port
from tests.test_cli import environment, process, read_until

from .conftest import shot

PAGES = {
    "#nav-portals": "/admin/portals",
    "#nav-clients": "/admin/clients",
    "#nav-calls": "/admin/calls",
    "#nav-jobs": "/admin/jobs",
    "#nav-events": "/admin/events",
}


async def test_every_admin_page_of_the_demo_works(tmp_path: Path, page: Page) -> None:
    errors: list[str] = []

    def console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(message.text)

    page.on("console", console)
    port = free_port()
    env = environment(tmp_path / "data")
    with process(env, tmp_path / "demo.log", "demo", "--port", str(port)) as demo:
        lines = await asyncio.to_thread(
            read_until, demo, lambda line: line.startswith("# Admin page:")
        )
        found = re.search(r"# Admin page: (\S+) \(sign in with the admin token (\S+)\)", lines[-1])
        assert found is not None, lines[-1]
        url, token = found.groups()
        assert url == f"http://127.0.0.1:{port}/admin"

        await page.goto(url)
        await page.fill("#token", token)
        await page.click("#sign-in")
        state = page.locator('tr[data-portal] [data-field="state"]')
        await expect(state).to_have_text("connected")
        for link, path in PAGES.items():
            await page.click(link)
            await expect(page).to_have_url(f"http://127.0.0.1:{port}{path}")
            await expect(page.locator("main h1")).to_be_visible()
            await shot(page, f"demo-{path.rsplit('/', 1)[1]}")
        # The demo's own client is listed; its key is not shown again.
        await page.click("#nav-clients")
        await expect(page.locator('tr[data-client^="demo-"]')).to_have_count(1)
        assert "b24_" not in await page.content()
    assert errors == []
