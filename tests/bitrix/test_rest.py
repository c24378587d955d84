"""The REST client against the sandbox portal: answers, Bitrix24's errors, broken links."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import httpx
import pytest
from aiohttp import web

from b24gate.bitrix import BatchAnswer, RestClient, classify
from b24gate.errors import (
    B24GateError,
    BitrixError,
    CredentialsRejected,
    OperationTimeLimit,
    OutcomeUnknown,
    PortalMoved,
    PortalUnavailable,
    QueryLimitExceeded,
    RequestError,
    TokenRejected,
    UpstreamInvalid,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from b24gate.sandbox import SandboxServer
from b24gate.testing import free_port
from tests.sandbox.conftest import connect

from .conftest import TinyServer, assert_no_secret, control, counters, issued_secrets


@pytest.fixture
def rest_base(sandbox: SandboxServer) -> str:
    return f"{sandbox.base_url}/rest/"


@pytest.fixture
async def token(client: httpx.AsyncClient, sandbox: SandboxServer) -> str:
    access: str = (await connect(client, sandbox))["access_token"]
    return access


async def _deal_count(rest_client: RestClient, rest_base: str, token: str) -> int:
    answer = await rest_client.call(rest_base, "crm.deal.list", {}, auth=token, write=False)
    total: int = answer["total"]
    return total


# -- answers -----------------------------------------------------------------------------


async def test_a_call_returns_bitrix24s_whole_answer(
    rest_client: RestClient, rest_base: str, token: str, client: httpx.AsyncClient
) -> None:
    answer = await rest_client.call(rest_base, "user.current", {}, auth=token, write=False)
    assert answer["result"]["ID"] == "1"
    assert {"start", "finish", "duration", "operating_reset_at"} <= set(answer["time"])
    assert (await counters(client))["secret_in_query"] == 0


async def test_cyrillic_params_round_trip(
    rest_client: RestClient, rest_base: str, token: str, client: httpx.AsyncClient
) -> None:
    title = "Сделка «Ромашка» — 1С"
    added = await rest_client.call(
        rest_base, "crm.deal.add", {"fields": {"TITLE": title}}, auth=token, write=True
    )
    deal = await rest_client.call(
        rest_base, "crm.deal.get", {"id": added["result"]}, auth=token, write=False
    )
    assert deal["result"]["TITLE"] == title
    assert (await counters(client))["secret_in_query"] == 0


async def test_list_answers_keep_total_and_next(
    rest_client: RestClient, rest_base: str, token: str, client: httpx.AsyncClient
) -> None:
    await control(client, "seed", {"entity": "crm.deal", "count": 60})
    page = await rest_client.call(rest_base, "crm.deal.list", {}, auth=token, write=False)
    assert len(page["result"]) == 50
    assert page["total"] == 60
    assert page["next"] == 50


async def test_an_incoming_webhook_needs_no_auth(
    rest_client: RestClient, client: httpx.AsyncClient
) -> None:
    hook = (await control(client, "webhooks", {"scope": "crm,user"}))["url"]
    answer = await rest_client.call(hook, "profile", {}, auth=None, write=False)
    assert answer["result"]["ID"] == "1"


async def test_a_bad_method_name_sends_nothing(
    rest_client: RestClient, rest_base: str, token: str, client: httpx.AsyncClient
) -> None:
    for name in ("../_sandbox/state", "crm.deal.list?auth=x", "a/b", ""):
        with pytest.raises(RequestError) as caught:
            await rest_client.call(rest_base, name, {}, auth=token, write=False)
        assert caught.value.code == "invalid_method"
    assert (await counters(client))["rest_calls"] == 0


# -- Bitrix24's errors -------------------------------------------------------------------


async def test_an_expired_token_is_rejected(
    rest_client: RestClient, rest_base: str, token: str, client: httpx.AsyncClient
) -> None:
    await control(client, "expire-access-tokens")
    with pytest.raises(TokenRejected) as caught:
        await rest_client.call(rest_base, "profile", {}, auth=token, write=False)
    assert caught.value.status == 401
    assert caught.value.error == "expired_token"
    assert token not in str(caught.value)


async def test_an_unknown_token_is_rejected(rest_client: RestClient, rest_base: str) -> None:
    with pytest.raises(TokenRejected) as caught:
        await rest_client.call(rest_base, "profile", {}, auth="0" * 32, write=False)
    assert caught.value.error == "invalid_token"


async def test_a_503_is_the_query_limit(
    rest_client: RestClient, rest_base: str, token: str, client: httpx.AsyncClient
) -> None:
    await control(client, "faults", {"kind": "503"})
    with pytest.raises(QueryLimitExceeded) as caught:
        await rest_client.call(rest_base, "crm.deal.add", {}, auth=token, write=True)
    assert caught.value.status == 503
    assert caught.value.error == "QUERY_LIMIT_EXCEEDED"


async def test_a_blocked_method_is_the_operation_time_limit(
    rest_client: RestClient, rest_base: str, token: str, client: httpx.AsyncClient
) -> None:
    await control(client, "method-cost", {"method": "crm.deal.list", "seconds": 500})
    await rest_client.call(rest_base, "crm.deal.list", {}, auth=token, write=False)
    with pytest.raises(OperationTimeLimit) as caught:
        await rest_client.call(rest_base, "crm.deal.list", {}, auth=token, write=False)
    assert caught.value.status == 429
    # Other methods keep working.
    await rest_client.call(rest_base, "profile", {}, auth=token, write=False)


async def test_operating_reset_at_is_kept(rest_client: RestClient, tiny_server: TinyServer) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        body = {
            "error": "OPERATION_TIME_LIMIT",
            "error_description": "Method is blocked due to operation time limit.",
            "time": {"operating_reset_at": 1780000600},
        }
        return web.json_response(body, status=429)

    base = await tiny_server(handler)
    with pytest.raises(OperationTimeLimit) as caught:
        await rest_client.call(f"{base}/rest/", "crm.deal.list", {}, auth="t", write=False)
    assert caught.value.reset_at == 1780000600.0


async def test_a_method_error_keeps_bitrix24s_words(
    rest_client: RestClient, rest_base: str, token: str
) -> None:
    with pytest.raises(BitrixError) as caught:
        await rest_client.call(rest_base, "crm.deal.get", {"id": 999999}, auth=token, write=False)
    exc = caught.value
    assert type(exc) is BitrixError
    assert (exc.status, exc.error, exc.description) == (400, "", "Not found")
    assert exc.body == {"error": "", "error_description": "Not found"}
    assert "while calling crm.deal.get" in (exc.__notes__ or [])


async def test_an_unknown_method_is_a_bitrix_error(
    rest_client: RestClient, rest_base: str, token: str
) -> None:
    with pytest.raises(BitrixError) as caught:
        await rest_client.call(rest_base, "crm.nothing.here", {}, auth=token, write=False)
    assert (caught.value.status, caught.value.error) == (404, "ERROR_METHOD_NOT_FOUND")


@pytest.mark.parametrize(
    ("code", "cls", "status"),
    [
        ("expired_token", TokenRejected, 401),
        ("invalid_token", TokenRejected, 401),
        ("INVALID_CREDENTIALS", CredentialsRejected, 401),
        ("QUERY_LIMIT_EXCEEDED", QueryLimitExceeded, 503),
        ("OPERATION_TIME_LIMIT", OperationTimeLimit, 429),
        ("ERROR_METHOD_NOT_FOUND", BitrixError, 404),
        ("", BitrixError, 400),
    ],
)
@pytest.mark.parametrize("spelling", [str.lower, str.upper])
async def test_a_code_means_the_same_in_either_case_from_a_call_or_a_batch(
    rest_client: RestClient,
    tiny_server: TinyServer,
    code: str,
    cls: type[BitrixError],
    status: int,
    spelling: Any,
) -> None:
    """One classifier: whichever case a portal spells a code in, and whether it answers a
    call or a command inside a batch, the same error comes back, so the same retry policy
    applies (a token refresh, a back-off, an operating-time hold)."""
    said = spelling(code)

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.json_response({"error": said, "error_description": "words"}, status=status)

    base = await tiny_server(handler)
    with pytest.raises(BitrixError) as caught:
        await rest_client.call(f"{base}/rest/", "crm.deal.list", {}, auth="0" * 32, write=False)
    batch = BatchAnswer.of(
        {"result": {"result_error": {"c0": {"error": said, "error_description": "words"}}}}
    )
    command = batch.outcome("c0")
    assert isinstance(command, BitrixError)
    for exc in (caught.value, command):
        assert type(exc) is cls
        # A command's error has no status of its own: it gets the one the call would have.
        assert (exc.status, exc.error, exc.description) == (status, said, "words")


def test_a_code_of_no_class_keeps_bitrix24s_status() -> None:
    exc = classify(418, "Some_Method_Error", "words", {"error": "Some_Method_Error"})
    assert type(exc) is BitrixError
    assert (exc.status, exc.code) == (418, "bitrix_error")


# -- redirects ---------------------------------------------------------------------------


async def test_a_portal_that_moved_is_reported_not_followed(
    rest_client: RestClient, rest_base: str, token: str, client: httpx.AsyncClient
) -> None:
    moved = await control(client, "move")
    with pytest.raises(PortalMoved) as caught:
        await rest_client.call(
            rest_base, "crm.deal.add", {"fields": {"TITLE": "x"}}, auth=token, write=True
        )
    assert caught.value.location == f"http://{moved['domain']}/rest/crm.deal.add"
    state = (await client.get("/_sandbox/state")).json()
    assert state["domain"] == moved["domain"]
    # The token went nowhere else, and nothing was created at the new address.
    new_base = f"http://{moved['domain']}/rest/"
    assert await _deal_count(rest_client, new_base, token) == 0


async def test_a_redirect_to_the_same_host_is_a_licence_page(
    rest_client: RestClient, tiny_server: TinyServer
) -> None:
    hits: list[str] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        hits.append(request.path)
        if request.path.startswith("/absolute/"):
            target = f"http://{request.host}/bitrix/coupon_activation.php"
        else:
            target = "/bitrix/coupon_activation.php"
        return web.Response(status=302, headers={"Location": target}, text="<html>licence")

    base = await tiny_server(handler)
    for prefix in ("rest", "absolute/rest"):
        with pytest.raises(PortalUnavailable):
            await rest_client.call(f"{base}/{prefix}/", "profile", {}, auth="t", write=False)
    assert hits == ["/rest/profile", "/absolute/rest/profile"]  # never followed


async def test_a_redirect_without_location_is_invalid(
    rest_client: RestClient, tiny_server: TinyServer
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(status=301)

    base = await tiny_server(handler)
    with pytest.raises(UpstreamInvalid):
        await rest_client.call(f"{base}/rest/", "profile", {}, auth="t", write=False)


# -- answers that are not Bitrix24's -----------------------------------------------------


async def test_a_malformed_answer_is_invalid(
    rest_client: RestClient, rest_base: str, token: str, client: httpx.AsyncClient
) -> None:
    await control(client, "faults", {"kind": "malformed"})
    with pytest.raises(UpstreamInvalid) as caught:
        await rest_client.call(rest_base, "profile", {}, auth=token, write=False)
    assert "200" in str(caught.value)
    assert "Bad Gateway" not in str(caught.value)


@pytest.mark.parametrize(
    ("status", "body", "content_type"),
    [
        (502, "<h1>502 Bad Gateway</h1>", "text/html"),
        (200, "[1, 2]", "application/json"),
        (200, '"text"', "application/json"),
        (500, '{"message": "no error key"}', "application/json"),
    ],
)
async def test_bodies_that_are_not_bitrix24s_are_invalid(
    rest_client: RestClient, tiny_server: TinyServer, status: int, body: str, content_type: str
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, text=body, content_type=content_type)

    base = await tiny_server(handler)
    with pytest.raises(UpstreamInvalid) as caught:
        await rest_client.call(f"{base}/rest/", "profile", {}, auth="t", write=False)
    assert str(status) in str(caught.value)
    assert body not in str(caught.value)


# -- broken links ------------------------------------------------------------------------


async def test_a_drop_after_sending_is_unreachable_for_a_read(
    rest_client: RestClient, rest_base: str, token: str, client: httpx.AsyncClient
) -> None:
    await control(client, "faults", {"kind": "drop"})
    with pytest.raises(UpstreamUnreachable) as caught:
        await rest_client.call(rest_base, "crm.deal.list", {}, auth=token, write=False)
    assert caught.value.sent is True


async def test_a_drop_after_sending_is_outcome_unknown_for_a_write(
    rest_client: RestClient, rest_base: str, token: str, client: httpx.AsyncClient
) -> None:
    await control(client, "faults", {"kind": "drop-after"})
    with pytest.raises(OutcomeUnknown):
        await rest_client.call(
            rest_base, "crm.deal.add", {"fields": {"TITLE": "x"}}, auth=token, write=True
        )
    # Why it must not be retried blindly: the deal exists.
    assert await _deal_count(rest_client, rest_base, token) == 1


async def test_a_slow_answer_times_out(
    session: aiohttp.ClientSession, rest_base: str, token: str, client: httpx.AsyncClient
) -> None:
    rest_client = RestClient(session, aiohttp.ClientTimeout(total=0.2))
    await control(client, "faults", {"kind": "slow", "delay": 0.6, "count": 2})
    with pytest.raises(UpstreamTimeout):
        await rest_client.call(rest_base, "crm.deal.list", {}, auth=token, write=False)
    with pytest.raises(OutcomeUnknown):
        await rest_client.call(rest_base, "crm.deal.add", {}, auth=token, write=True)


@pytest.mark.parametrize("write", [False, True])
async def test_a_refused_connection_sent_nothing(rest_client: RestClient, write: bool) -> None:
    base = f"http://127.0.0.1:{free_port()}/rest/"
    with pytest.raises(UpstreamUnreachable) as caught:
        await rest_client.call(base, "crm.deal.add", {}, auth="t", write=write)
    assert caught.value.sent is False  # a write too: safe to send again


async def test_no_free_connection_in_time_sent_nothing(
    rest_base: str, token: str, client: httpx.AsyncClient
) -> None:
    # One connection in the pool, held by a slow call: the next call never gets to send.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
        await control(client, "faults", {"kind": "slow", "delay": 0.5})
        slow = asyncio.create_task(
            RestClient(session).call(rest_base, "profile", {}, auth=token, write=False)
        )
        await asyncio.sleep(0.1)
        hurried = RestClient(session, aiohttp.ClientTimeout(total=5, connect=0.1))
        with pytest.raises(UpstreamUnreachable) as caught:
            await hurried.call(rest_base, "crm.deal.add", {}, auth=token, write=True)
        assert caught.value.sent is False
        assert (await slow)["result"]["ID"] == "1"


# -- secrets -----------------------------------------------------------------------------


async def test_no_token_or_webhook_secret_in_any_error_or_log_line(
    session: aiohttp.ClientSession,
    rest_base: str,
    token: str,
    client: httpx.AsyncClient,
    sandbox: SandboxServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="b24gate")
    hook = (await control(client, "webhooks", {"scope": "crm,user"}))["url"]
    rest_client = RestClient(session, aiohttp.ClientTimeout(total=0.2))
    raised: list[B24GateError] = []

    async def attempt(base: str, method: str, auth: str | None, **params: Any) -> None:
        try:
            await rest_client.call(base, method, params, auth=auth, write=method.endswith("add"))
        except B24GateError as exc:
            raised.append(exc)

    for base, auth in ((rest_base, token), (hook, None)):
        for kind in ("500", "503", "malformed", "drop", "drop-after", "slow"):
            await control(client, "faults", {"kind": kind, "delay": 0.6})
            await attempt(base, "crm.deal.add", auth, fields={"TITLE": "x"})
        await attempt(base, "crm.deal.get", auth, id=999999)
    await attempt(rest_base, "crm.deal.add", "0" * 32)
    await control(client, "expire-access-tokens")
    await attempt(rest_base, "crm.deal.list", token)
    await control(client, "move")
    await attempt(rest_base, "crm.deal.list", token)
    await attempt(hook, "crm.deal.list", None)
    await attempt(hook.replace(str(sandbox.port), str(free_port())), "profile", None)

    assert len(raised) == 19
    secrets = [*await issued_secrets(client, sandbox), hook.rstrip("/").rsplit("/", 1)[-1]]
    for exc in raised:
        assert_no_secret(exc, secrets)
    ours = [r for r in caplog.records if r.name.startswith("b24gate")]
    assert ours
    for record in ours:
        for secret in secrets:
            assert secret not in record.getMessage()
    assert (await counters(client))["secret_in_query"] == 0
