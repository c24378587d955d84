"""Portal and client administration (``b24gate.core``'s admin functions), as an admin page or
API would call them: every refusal is an error of the tree with a machine code and the
field at fault, and nothing refused reaches the store; the store refuses a bad address
on its own too. And a call the administrator makes goes through a client's entrance.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from b24gate.bitrix import DEFAULT_PLAN, PLANS
from b24gate.core import (
    Budget,
    NewClient,
    add_client,
    add_portal,
    ip_ranges,
    list_clients,
    method_patterns,
    new_client,
    oauth_portal,
    operator_call,
    portal_change,
    portal_name,
    portal_status,
    request_budget,
    revoke_client,
    set_portal,
    webhook_address,
    webhook_portal,
)
from b24gate.errors import (
    B24GateError,
    Conflict,
    InvalidSetting,
    RequestError,
    UnknownClient,
    UnknownPortal,
)
from b24gate.store import Cipher, NewPortal, Store, StoreConflict

# The API tests' stack: a gateway on a real port in front of a sandbox, on loopback.
from tests.api.conftest import MakeStack, _no_retry_waits, make_stack  # noqa: F401

SECRET = "app-secret-Zq8vW3xK1mN5pR7t"
HOOK_CODE = "hookcodeQz71xx0aa"
HOOK = f"https://hook.bitrix24.ru/rest/1/{HOOK_CODE}/"

# Addresses a token or a webhook's secret must never be sent to, and why.
BAD_URLS = {
    "plain http to a public host": "http://company.bitrix24.ru",
    "plain http to a private address": "http://10.0.0.5",
    "plain http to the cloud metadata address": "http://169.254.169.254",
    "plain http to a name that only starts like loopback": "http://localhost.evil.example",
    "plain http to a name that embeds 127.0.0.1": "http://127.0.0.1.nip.io",
    "ftp": "ftp://company.bitrix24.ru",
    "javascript": "javascript:alert(1)",
    "no host": "https://",
    "a user name and password": "https://user:pw@company.bitrix24.ru",
    "a user name hiding the real host": "https://company.bitrix24.ru@evil.example",
    "a fragment": "https://company.bitrix24.ru#x",
    "a query": "https://company.bitrix24.ru/?x=1",
    "a path": "https://company.bitrix24.ru/rest/",
    "a space in the host": "https://company bitrix24.ru",
    "a port that is no number": "https://company.bitrix24.ru:https",
    "a port out of range": "https://company.bitrix24.ru:70000",
}


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with await Store.open(f"sqlite:///{tmp_path}/b24gate.db", Cipher(os.urandom(32))) as s:
        yield s


def an_oauth_portal(name: str = "main", url: str = "https://company.bitrix24.ru") -> NewPortal:
    return oauth_portal(name, url, "local.app", SECRET)


def refused(exc: pytest.ExceptionInfo[InvalidSetting], field: str) -> None:
    assert exc.value.code == "invalid_setting"
    assert exc.value.status == 400
    assert exc.value.field == field
    assert isinstance(exc.value, RequestError)


# -- addresses ---------------------------------------------------------------------------


@pytest.mark.parametrize("url", BAD_URLS.values(), ids=BAD_URLS.keys())
async def test_a_portal_address_is_https_or_loopback_http_and_nothing_else(
    store: Store, url: str
) -> None:
    with pytest.raises(InvalidSetting) as by_builder:
        an_oauth_portal(url=url)
    refused(by_builder, "url")
    # A portal built some other way (an API handing over a NewPortal) is refused the same.
    forged = dataclasses.replace(an_oauth_portal(), url=url)
    with pytest.raises(InvalidSetting) as by_core:
        await add_portal(store, forged)
    refused(by_core, "url")
    # And the store refuses it on its own, whoever calls it.
    with pytest.raises(InvalidSetting) as by_store:
        await store.add_portal(forged)
    refused(by_store, "url")
    # One rule, one message: the administrator reads the same whoever refused it.
    assert by_store.value.message == by_core.value.message == by_builder.value.message
    assert await store.portals() == []


@pytest.mark.parametrize("url", BAD_URLS.values(), ids=BAD_URLS.keys())
async def test_the_oauth_server_obeys_the_same_rule(store: Store, url: str) -> None:
    with pytest.raises(InvalidSetting) as by_builder:
        oauth_portal("main", "https://company.bitrix24.ru", "local.app", SECRET, oauth_url=url)
    refused(by_builder, "oauth_url")
    forged = dataclasses.replace(an_oauth_portal(), oauth_url=url)
    with pytest.raises(InvalidSetting) as by_store:
        await store.add_portal(forged)
    refused(by_store, "oauth_url")
    assert by_store.value.message == by_builder.value.message
    assert await store.portals() == []


@pytest.mark.parametrize(
    ("given", "base", "domain"),
    [
        ("https://Company.Bitrix24.RU:443/", "https://company.bitrix24.ru", "company.bitrix24.ru"),
        ("https://company.bitrix24.ru:8443", "https://company.bitrix24.ru:8443", None),
        ("http://127.0.0.1:8443", "http://127.0.0.1:8443", "127.0.0.1:8443"),
        ("http://localhost", "http://localhost", "localhost"),
        ("http://[::1]:9000", "http://[::1]:9000", "[::1]:9000"),
        ("https://портал.рф", "https://портал.рф", "портал.рф"),
    ],
)
def test_a_good_address_is_kept_as_its_origin(given: str, base: str, domain: str | None) -> None:
    portal = an_oauth_portal(url=given)
    assert portal.url == base
    assert portal.domain == (domain or base.removeprefix("https://"))
    assert portal.oauth_url == "https://oauth.bitrix.info"  # Bitrix24's own, by default


@pytest.mark.parametrize(
    "hook",
    [
        f"http://hook.bitrix24.ru/rest/1/{HOOK_CODE}/",
        f"https://hook.bitrix24.ru/rest/1/{HOOK_CODE}/profile.json",
        f"https://user:pw@hook.bitrix24.ru/rest/1/{HOOK_CODE}/",
        f"https://hook.bitrix24.ru/rest/1/{HOOK_CODE}/?x=1",
        f"https://hook.bitrix24.ru/rest/1/{HOOK_CODE}/#x",
        f"ftp://hook.bitrix24.ru/rest/1/{HOOK_CODE}/",
    ],
)
async def test_a_webhook_url_is_refused_without_being_quoted(store: Store, hook: str) -> None:
    with pytest.raises(InvalidSetting) as by_builder:
        webhook_address(hook)
    refused(by_builder, "webhook_url")
    assert HOOK_CODE not in str(by_builder.value)
    forged = NewPortal(
        name="hook",
        url="https://hook.bitrix24.ru",
        domain="hook.bitrix24.ru",
        kind="webhook",
        webhook_url=hook,
    )
    with pytest.raises(InvalidSetting) as by_store:
        await store.add_portal(forged)
    refused(by_store, "webhook_url")
    assert HOOK_CODE not in str(by_store.value)
    assert by_store.value.message == by_builder.value.message
    assert await store.portals() == []


async def test_the_store_refuses_a_bad_address_in_a_change_too(store: Store) -> None:
    await add_portal(store, an_oauth_portal())
    hook = await add_portal(store, webhook_portal("hook", webhook_address(HOOK)))
    before = await store.portals()
    for url in ("http://evil.example", "https://company.bitrix24.ru/rest/"):
        with pytest.raises(InvalidSetting) as exc:
            await store.update_portal("main", url=url)
        refused(exc, "url")
    with pytest.raises(InvalidSetting) as exc:
        await store.update_portal("main", oauth_url="http://evil.example")
    refused(exc, "oauth_url")
    with pytest.raises(InvalidSetting) as exc:
        await store.update_portal(hook.name, webhook_url=f"http://evil.example/rest/1/{HOOK_CODE}/")
    refused(exc, "webhook_url")
    assert await store.portals() == before


# -- names, budgets, client rules ---------------------------------------------------------


@pytest.mark.parametrize("name", ["", "a b", "a/b", "a\nb", "main;drop", "x" * 65, "-", "a.b"])
def test_a_portal_name_is_letters_digits_dashes_and_underscores(name: str) -> None:
    with pytest.raises(InvalidSetting) as exc:
        portal_name(name)
    refused(exc, "name")
    with pytest.raises(InvalidSetting):
        an_oauth_portal(name)


def test_good_portal_names() -> None:
    for name in ("main", "shop-2", "a_b", "x" * 64):
        assert an_oauth_portal(name).name == name


def test_plans_and_explicit_budgets() -> None:
    assert request_budget("enterprise") == {"rate": 5.0, "burst": 250}
    assert request_budget("Standard") == {"rate": 2.0, "burst": 50}
    assert request_budget(rate=0) == {"rate": 0.0}  # no limit (on-premise)
    assert request_budget(burst=10) == {"burst": 10}  # a change of the burst alone
    assert request_budget() == {}
    new = oauth_portal("big", "https://big.bitrix24.ru", "local.big", SECRET, budget={"rate": 5})
    assert (new.rate, new.burst) == (5.0, 50)
    # A portal given no budget gets the plan most portals are on.
    default = PLANS[DEFAULT_PLAN]
    assert (an_oauth_portal().rate, an_oauth_portal().burst) == (default.rate, default.burst)


@pytest.mark.parametrize(
    ("plan", "rate", "burst", "field"),
    [
        ("gold", None, None, "plan"),
        ("standard", 1.0, None, "plan"),
        ("enterprise", None, 10, "plan"),
        (None, -1.0, None, "rate"),
        (None, 1000.5, None, "rate"),
        (None, float("nan"), None, "rate"),
        (None, float("inf"), None, "rate"),
        (None, None, 0, "burst"),
        (None, None, 100_001, "burst"),
    ],
)
async def test_budgets_out_of_range_are_refused(
    store: Store, plan: str | None, rate: float | None, burst: int | None, field: str
) -> None:
    with pytest.raises(InvalidSetting) as exc:
        request_budget(plan, rate, burst)
    refused(exc, field)
    await add_portal(store, an_oauth_portal())
    if plan is None:
        changes: Budget = {"rate": rate} if rate is not None else {"burst": burst or 0}
        with pytest.raises(InvalidSetting):
            await set_portal(store, "main", budget=changes)
        with pytest.raises(InvalidSetting) as by_store:
            await store.update_portal("main", **changes)
        refused(by_store, field)
        assert by_store.value.message == exc.value.message
    portal = (await portal_status(store, "main")).portal
    assert (portal.rate, portal.burst) == (2.0, 50)


@pytest.mark.parametrize("cidr", ["notacidr", "10.0.0.0/33", "300.1.1.1", "", "10.0.0.0/8,1.1.1.1"])
async def test_a_client_address_must_be_an_address_or_cidr(store: Store, cidr: str) -> None:
    await add_portal(store, an_oauth_portal())
    with pytest.raises(InvalidSetting) as exc:
        ip_ranges([cidr])
    refused(exc, "ips")
    forged = NewClient(name="erp", portals=("main",), ips=(cidr,))
    with pytest.raises(InvalidSetting):
        await add_client(store, forged)
    assert await list_clients(store) == []


def test_good_client_rules() -> None:
    assert ip_ranges(["10.0.0.0/8", " 192.168.1.7 ", "2001:db8::/32"]) == (
        "10.0.0.0/8",
        "192.168.1.7",
        "2001:db8::/32",
    )
    assert method_patterns(["crm.*", " user.get ", "catalog.product.?et"]) == (
        "crm.*",
        "user.get",
        "catalog.product.?et",
    )


@pytest.mark.parametrize("pattern", ["crm deal", "crm/*", "", "crm.*\nuser.*"])
def test_a_method_pattern_that_could_never_match_is_refused(pattern: str) -> None:
    with pytest.raises(InvalidSetting) as exc:
        method_patterns([pattern])
    refused(exc, "methods")


def test_a_client_needs_a_name_and_a_portal() -> None:
    with pytest.raises(InvalidSetting) as no_portal:
        new_client("erp", [])
    refused(no_portal, "portals")
    with pytest.raises(InvalidSetting) as no_name:
        new_client(" ", ["main"])
    refused(no_name, "name")


@pytest.mark.parametrize(
    "name", ["erp\n", "erp\r\nx", "a\tb", "erp\x00", "erp\x1b[31m", "\u202eerp", "a\u2028b"]
)
async def test_a_client_name_with_a_control_character_is_refused(store: Store, name: str) -> None:
    # A name is shown in `client list` and log lines: a newline or an escape sequence
    # could forge a line, a bidi override disguise one name as another.
    await add_portal(store, an_oauth_portal())
    with pytest.raises(InvalidSetting) as exc:
        new_client(name, ["main"])
    refused(exc, "name")
    with pytest.raises(InvalidSetting):
        await add_client(store, NewClient(name=name, portals=("main",)))
    assert await list_clients(store) == []


def test_a_client_name_may_have_spaces_and_any_script() -> None:
    assert new_client("1С Бухгалтерия 3.0", ["main"]).name == "1С Бухгалтерия 3.0"


def test_a_change_must_change_something() -> None:
    with pytest.raises(RequestError) as exc:
        portal_change()
    assert exc.value.code == "invalid_request"
    assert "install event" in exc.value.message
    portal_change(connect_by_install=False)  # a change, though to the same value


# -- the store's answers, as errors of the tree -------------------------------------------


async def test_conflicts_and_unknown_names_are_errors_of_the_tree(store: Store) -> None:
    await add_portal(store, an_oauth_portal())
    with pytest.raises(Conflict) as taken:
        await add_portal(store, an_oauth_portal())
    assert isinstance(taken.value, StoreConflict)
    assert (taken.value.code, taken.value.status) == ("conflict", 409)
    with pytest.raises(Conflict, match="already has the domain"):
        await add_portal(store, an_oauth_portal("other"))

    issued = await add_client(store, new_client("erp", ["main"]))
    assert issued.key.startswith("b24_")
    assert issued.key not in repr(issued)
    with pytest.raises(Conflict, match="a client named 'erp' already exists"):
        await add_client(store, new_client("erp", ["main"]))
    with pytest.raises(UnknownPortal) as unknown:
        await add_client(store, new_client("ghost-client", ["main", "ghost"]))
    assert (unknown.value.code, unknown.value.status) == ("unknown_portal", 404)
    assert "ghost" in unknown.value.message
    assert [c.name for c in await list_clients(store)] == ["erp"]

    await revoke_client(store, "erp")
    with pytest.raises(UnknownClient) as again:
        await revoke_client(store, "erp")
    assert (again.value.code, again.value.status) == ("unknown_client", 404)
    with pytest.raises(UnknownPortal):
        await portal_status(store, "ghost")
    with pytest.raises(UnknownPortal):
        await set_portal(store, "ghost", budget={"rate": 1.0})


async def test_a_change_that_does_not_fit_the_portal_changes_nothing(store: Store) -> None:
    await add_portal(store, an_oauth_portal())
    await add_portal(store, webhook_portal("hook", webhook_address(HOOK)))
    before = await store.portals()
    other_hook = webhook_address(f"https://other.bitrix24.ru/rest/1/{HOOK_CODE}/")
    with pytest.raises(Conflict, match="uses an OAuth app"):
        await set_portal(store, "main", webhook=other_hook)
    with pytest.raises(Conflict, match="no install event"):
        await set_portal(store, "hook", connect_by_install=True)
    with pytest.raises(RequestError, match="nothing to change"):
        await set_portal(store, "main")
    assert await store.portals() == before

    changed = await set_portal(store, "hook", webhook=other_hook, budget=request_budget("standard"))
    assert (changed.domain, changed.url) == ("other.bitrix24.ru", "https://other.bitrix24.ru")
    assert changed.state == "connected"


# -- the administrator's own calls --------------------------------------------------------


async def test_an_operator_call_is_booked_in_the_portals_budget(
    make_stack: MakeStack,  # noqa: F811  (the fixture imported above)
) -> None:
    # One request per second, and no burst: a call after another waits about a second for
    # its slot, whoever made the first.
    stack = await make_stack()
    await stack.add_portal(rate=1.0, burst=1)
    assert (await stack.connect()).status_code == 200
    key = await stack.add_client()
    dispatcher = stack.gateway.dispatcher
    await stack.control.post("/_sandbox/counters/reset")

    async with asyncio.timeout(20):
        first = await operator_call(dispatcher, "demo", "crm.deal.list", {})
        assert "result" in first
        # A client's call right after the shell's one waits for the next slot: the shell's
        # call took the current one.
        started = time.monotonic()
        answer = await stack.call(key, {"portal": "demo", "method": "crm.deal.list"})
        assert answer.status_code == 200, answer.text
        assert time.monotonic() - started >= 0.7
        # And the other way round: the shell's call waits behind the client's.
        started = time.monotonic()
        await operator_call(dispatcher, "demo", "crm.deal.list", {})
        assert time.monotonic() - started >= 0.7
    assert (await stack.counters())["rejected_503"] == 0


async def test_an_operator_call_obeys_the_rules_of_a_clients_call(
    make_stack: MakeStack,  # noqa: F811  (the fixture imported above)
) -> None:
    stack = await make_stack()
    await stack.add_portal()
    dispatcher = stack.gateway.dispatcher
    async with asyncio.timeout(20):
        with pytest.raises(B24GateError) as never_connected:
            await operator_call(dispatcher, "demo", "crm.deal.list", {})
        assert never_connected.value.code == "needs_authorization"
        assert (await stack.connect()).status_code == 200
        with pytest.raises(RequestError) as bad_name:
            await operator_call(dispatcher, "demo", "crm.deal.list/../../x", {})
        assert bad_name.value.code == "invalid_method"
        with pytest.raises(UnknownPortal):
            await operator_call(dispatcher, "elsewhere", "crm.deal.list", {})
        received = (await stack.control.get("/_sandbox/received")).json()["urls"]
        assert not [url for url in received if "crm.deal.list" in url]
