"""The admin page in a real browser, as an administrator uses it against the sandbox: sign in,
connect the portal with the button (through the sandbox's consent page), create a client,
see its refused call, revoke it. Each step leaves a screenshot in build/screenshots/.
"""

from __future__ import annotations

import httpx
from playwright.async_api import Page, expect

from tests.api.conftest import MakeStack, Stack

from .conftest import shot

TOKEN = "admin-token-for-the-browser-tests-0123456789"


async def _stack(make_stack: MakeStack) -> Stack:
    # The consent page is shown (no auto-approve): the browser clicks Allow, as a person does.
    stack = await make_stack({"auto_approve": False}, admin_token=TOKEN)
    await stack.add_portal()
    return stack


async def _sign_in(page: Page, stack: Stack) -> None:
    await page.goto(f"{stack.base_url}/admin")
    await expect(page.locator("#token")).to_be_visible()
    await page.fill("#token", TOKEN)
    await page.click("#sign-in")
    await expect(page.locator("#nav-portals")).to_be_visible()


async def test_an_administrator_connects_creates_sees_a_refusal_and_revokes(
    make_stack: MakeStack, page: Page
) -> None:
    stack = await _stack(make_stack)

    # A wrong token: an error, no way in.
    await page.goto(f"{stack.base_url}/admin")
    await page.fill("#token", "not-the-token")
    await page.click("#sign-in")
    await expect(page.locator("#error")).to_be_visible()
    await shot(page, "01-sign-in-refused")

    await _sign_in(page, stack)
    row = page.locator('tr[data-portal="demo"]')
    await expect(row.locator('[data-field="state"]')).to_have_text("not_connected")
    await shot(page, "02-portals-not-connected")

    # The button runs the real connect flow: the portal's consent page, then back.
    await row.locator('button[data-action="connect"]').click()
    await page.get_by_role("button", name="Allow").click()
    await expect(page.get_by_text("Portal connected")).to_be_visible()
    await shot(page, "03-connected")
    assert (await stack.counters())["grants"]["authorization_code"] == 1
    await page.goto(f"{stack.base_url}/admin/portals")
    await expect(page.locator('tr[data-portal="demo"] [data-field="state"]')).to_have_text(
        "connected"
    )
    await shot(page, "04-portals-connected")

    # A client allowed crm.deal.* only; the key is shown once.
    await page.click("#nav-clients")
    await page.fill("#client-name", "erp")
    await page.fill("#client-portals", "demo")
    await page.fill("#client-methods", "crm.deal.*")
    await page.click("#client-create")
    key = (await page.locator("#new-key").inner_text()).strip()
    assert key
    await shot(page, "05-client-created")
    await page.reload()
    await expect(page.locator("#new-key")).to_have_count(0)
    assert key not in await page.content()

    # The key works within its scope and is refused outside it.
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as http:
        headers = {"Authorization": f"Bearer {key}"}
        allowed = await http.post(
            "/api/v1/call",
            json={"portal": "demo", "method": "crm.deal.list", "params": {}},
            headers=headers,
        )
        assert allowed.status_code == 200, allowed.text
        refused = await http.post(
            "/api/v1/call",
            json={"portal": "demo", "method": "user.get", "params": {}},
            headers=headers,
        )
        assert refused.status_code == 403, refused.text
        code = refused.json()["code"]

    # The refusal shows up on the calls page, with its code, and the filter finds it.
    await page.click("#nav-calls")
    await page.fill("#filter-client", "erp")
    await page.click("#filter-apply")
    await expect(page.locator(f'#calls tr[data-code="{code}"]').first).to_be_visible()
    assert key not in await page.content()
    await shot(page, "06-refused-call")

    # Revoked: the row goes and the key stops working.
    await page.click("#nav-clients")
    await page.locator('tr[data-client="erp"] button[data-action="revoke"]').click()
    confirm = page.locator("#confirm")
    if await confirm.count():
        await confirm.click()
    await expect(page.locator('tr[data-client="erp"] button[data-action="revoke"]')).to_have_count(
        0
    )
    await shot(page, "07-client-revoked")
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as http:
        after = await http.post(
            "/api/v1/call",
            json={"portal": "demo", "method": "crm.deal.list", "params": {}},
            headers={"Authorization": f"Bearer {key}"},
        )
    assert after.status_code == 401, after.text


async def test_the_page_speaks_russian_and_signs_out(make_stack: MakeStack, page: Page) -> None:
    stack = await _stack(make_stack)
    await _sign_in(page, stack)
    await page.click("#lang-ru")
    await expect(page.locator('tr[data-portal="demo"] button[data-action="connect"]')).to_have_text(
        "Подключить"
    )
    await shot(page, "08-portals-ru")
    await page.click("#sign-out")
    await expect(page.locator("#token")).to_be_visible()
    await page.goto(f"{stack.base_url}/admin/clients")
    await expect(page.locator("#token")).to_be_visible()
