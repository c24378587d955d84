"""The portal's REST endpoint over real HTTP: parameter styles, auth, errors, system methods."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme

from b24gate.sandbox import Clock, SandboxServer

from .conftest import T0, MakeSandbox, connect, rest

TIME_KEYS = {
    "start",
    "finish",
    "duration",
    "processing",
    "date_start",
    "date_finish",
    "operating",
    "operating_reset_at",
}


async def new_webhook(http: httpx.AsyncClient, scope: str = "crm", user_id: int = 1) -> str:
    response = await http.post("/_sandbox/webhooks", json={"user_id": user_id, "scope": scope})
    assert response.status_code == 200, response.text
    url: str = response.json()["url"]
    return url


async def deal_title(http: httpx.AsyncClient, token: str, deal_id: Any) -> Any:
    response = await rest(http, "crm.deal.get", token, id=deal_id)
    assert response.status_code == 200, response.text
    return response.json()["result"]["TITLE"]


# -- endpoints and parameter styles ---------------------------------------------------


@pytest.mark.parametrize("suffix", ["", ".json"])
async def test_method_with_and_without_json_suffix(
    client: httpx.AsyncClient, token: str, suffix: str
) -> None:
    response = await client.get(f"/rest/profile{suffix}", params={"auth": token})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["result"]["ID"] == "1"


AddDeal = Callable[[httpx.AsyncClient, str, str], Awaitable[httpx.Response]]


async def _add_by_query(http: httpx.AsyncClient, token: str, title: str) -> httpx.Response:
    return await http.get("/rest/crm.deal.add", params={"auth": token, "fields[TITLE]": title})


async def _add_by_form(http: httpx.AsyncClient, token: str, title: str) -> httpx.Response:
    return await http.post("/rest/crm.deal.add.json", data={"auth": token, "fields[TITLE]": title})


async def _add_by_multipart(http: httpx.AsyncClient, token: str, title: str) -> httpx.Response:
    # A filename of None makes plain form-data fields rather than file uploads.
    response = await http.post(
        "/rest/crm.deal.add.json",
        files={"auth": (None, token), "fields[TITLE]": (None, title)},
    )
    assert response.request.headers["content-type"].startswith("multipart/form-data")
    return response


async def _add_by_json(http: httpx.AsyncClient, token: str, title: str) -> httpx.Response:
    return await http.post(
        "/rest/crm.deal.add.json", json={"auth": token, "fields": {"TITLE": title}}
    )


async def _add_by_form_auth_in_query(
    http: httpx.AsyncClient, token: str, title: str
) -> httpx.Response:
    return await http.post(
        "/rest/crm.deal.add.json", params={"auth": token}, data={"fields[TITLE]": title}
    )


async def _add_by_json_auth_in_query(
    http: httpx.AsyncClient, token: str, title: str
) -> httpx.Response:
    return await http.post(
        "/rest/crm.deal.add.json", params={"auth": token}, json={"fields": {"TITLE": title}}
    )


@pytest.mark.parametrize(
    "add",
    [
        _add_by_query,
        _add_by_form,
        _add_by_multipart,
        _add_by_json,
        _add_by_form_auth_in_query,
        _add_by_json_auth_in_query,
    ],
)
async def test_parameter_styles_reach_the_method(
    client: httpx.AsyncClient, token: str, add: AddDeal
) -> None:
    response = await add(client, token, "Сделка №1")
    assert response.status_code == 200, response.text
    deal_id = response.json()["result"]
    assert isinstance(deal_id, int)
    assert await deal_title(client, token, deal_id) == "Сделка №1"


async def test_bracket_filter_and_select_in_the_query_string(
    client: httpx.AsyncClient, token: str
) -> None:
    for title in ("one", "two", "three"):
        assert (await rest(client, "crm.deal.add", token, fields={"TITLE": title})).is_success
    response = await client.get(
        "/rest/crm.deal.list",
        params=[
            ("auth", token),
            ("filter[>ID]", "1"),
            ("select[]", "ID"),
            ("select[]", "TITLE"),
        ],
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["result"] == [{"ID": "2", "TITLE": "two"}, {"ID": "3", "TITLE": "three"}]
    assert body["total"] == 2


async def test_numeric_top_level_form_keys_do_not_break_the_call(
    client: httpx.AsyncClient, token: str
) -> None:
    # Regression: a body of only `0=...` used to make the parameters a list and fail with 500.
    response = await client.post("/rest/profile", params={"auth": token}, data={"0": "x"})
    assert response.status_code == 200, response.text
    assert response.json()["result"]["ID"] == "1"


async def test_cyrillic_round_trip(client: httpx.AsyncClient, token: str) -> None:
    added = await rest(
        client, "crm.deal.add", token, fields={"TITLE": "Сделка №1", "COMMENTS": "Ёлка «ёж»"}
    )
    assert added.status_code == 200, added.text
    got = await rest(client, "crm.deal.get", token, id=added.json()["result"])
    assert got.json()["result"]["TITLE"] == "Сделка №1"
    assert got.json()["result"]["COMMENTS"] == "Ёлка «ёж»"


async def test_method_names_are_case_insensitive(client: httpx.AsyncClient, token: str) -> None:
    assert (await rest(client, "crm.deal.add", token, fields={"TITLE": "A"})).is_success
    response = await rest(client, "CRM.DEAL.LIST", token)
    assert response.status_code == 200, response.text
    assert [row["TITLE"] for row in response.json()["result"]] == ["A"]
    assert (await rest(client, "Profile", token)).json()["result"]["ID"] == "1"


# -- auth and errors ------------------------------------------------------------------


async def test_no_auth(client: httpx.AsyncClient) -> None:
    for response in (
        await client.get("/rest/profile"),
        await client.post("/rest/profile.json", json={}),
        await client.get("/rest/profile", params={"auth": ""}),
    ):
        assert response.status_code == 401
        assert response.json() == {
            "error": "NO_AUTH_FOUND",
            "error_description": "Wrong authorization data",
        }


async def test_unknown_token(client: httpx.AsyncClient) -> None:
    response = await rest(client, "profile", "0" * 32)
    assert response.status_code == 401
    assert response.json() == {
        "error": "invalid_token",
        "error_description": "Unable to get application by token.",
    }


async def test_unknown_method(client: httpx.AsyncClient, token: str) -> None:
    response = await rest(client, "crm.deal.nothing", token)
    assert response.status_code == 404
    assert response.json() == {
        "error": "ERROR_METHOD_NOT_FOUND",
        "error_description": "Method not found!",
    }


@pytest.mark.parametrize("method", ["catalog.product.list", "user.current"])
async def test_method_outside_the_apps_scope(make_sandbox: MakeSandbox, method: str) -> None:
    sb = await make_sandbox(scope=("crm",))
    async with httpx.AsyncClient(base_url=sb.base_url) as http:
        token = (await connect(http, sb))["access_token"]
        refused = await rest(http, method, token)
        allowed = await rest(http, "crm.deal.list", token)
    assert refused.status_code == 401
    assert refused.json() == {
        "error": "insufficient_scope",
        "error_description": (
            "The request requires higher privileges than provided by the access token"
        ),
    }
    assert allowed.status_code == 200


async def test_webhook_calls(client: httpx.AsyncClient, sandbox: SandboxServer) -> None:
    url = await new_webhook(client, scope="crm", user_id=2)
    assert url.startswith(f"{sandbox.base_url}/rest/2/")
    assert url.endswith("/")
    added = await client.post(url + "crm.deal.add.json", json={"fields": {"TITLE": "hook"}})
    assert added.status_code == 200, added.text
    listed = await client.get(url + "crm.deal.list", params={"select[]": "CREATED_BY_ID"})
    assert listed.json()["result"] == [{"CREATED_BY_ID": "2"}]
    profile = await client.get(url + "profile")
    assert profile.json()["result"]["ID"] == "2"


async def test_webhook_with_a_bad_code(client: httpx.AsyncClient) -> None:
    url = await new_webhook(client)
    user_id, code = url.rstrip("/").split("/")[-2:]
    for bad in (
        f"/rest/{user_id}/{code}x/profile",
        f"/rest/3/{code}/profile",
        f"/rest/nobody/{code}/profile",
    ):
        response = await client.get(bad)
        assert response.status_code == 401, bad
        assert response.json() == {
            "error": "INVALID_CREDENTIALS",
            "error_description": "Invalid request credentials",
        }


async def test_webhook_outside_its_scope(client: httpx.AsyncClient) -> None:
    url = await new_webhook(client, scope="crm")
    response = await client.get(url + "user.current")
    assert response.status_code == 401
    assert response.json() == {
        "error": "insufficient_scope",
        "error_description": (
            "The request requires higher privileges than provided by the webhook token"
        ),
    }


# -- the success envelope -------------------------------------------------------------


async def test_time_block(client: httpx.AsyncClient, token: str) -> None:
    response = await rest(client, "profile", token)
    timing = response.json()["time"]
    assert set(timing) == TIME_KEYS
    assert timing["start"] == T0
    assert timing["finish"] >= timing["start"]
    assert timing["duration"] == pytest.approx(timing["finish"] - timing["start"])
    assert timing["processing"] >= 0
    assert datetime.fromisoformat(timing["date_start"]) == datetime.fromtimestamp(T0, UTC)
    assert datetime.fromisoformat(timing["date_finish"]) >= datetime.fromisoformat(
        timing["date_start"]
    )
    assert timing["operating"] >= 0
    assert timing["operating_reset_at"] == int(timing["start"]) + 600


async def test_operating_reset_at_follows_the_methods_first_call(
    client: httpx.AsyncClient, token: str, clock: Clock
) -> None:
    await rest(client, "profile", token)
    clock.advance(100)
    again = (await rest(client, "profile", token)).json()["time"]
    fresh = (await rest(client, "server.time", token)).json()["time"]
    assert again["operating_reset_at"] == int(T0) + 600
    assert fresh["operating_reset_at"] == int(T0) + 100 + 600


# -- system methods -------------------------------------------------------------------


async def test_profile(client: httpx.AsyncClient, token: str) -> None:
    result = (await rest(client, "profile", token)).json()["result"]
    assert result["ID"] == "1"
    assert result["ADMIN"] is True
    assert {"NAME", "LAST_NAME"} <= set(result)


async def test_user_current(client: httpx.AsyncClient, token: str) -> None:
    result = (await rest(client, "user.current", token)).json()["result"]
    assert result["ID"] == "1"
    assert "EMAIL" in result


async def test_user_get(client: httpx.AsyncClient, token: str) -> None:
    body = (await rest(client, "user.get", token)).json()
    assert [u["ID"] for u in body["result"]] == ["1", "2", "3"]
    assert body["total"] == 3
    assert "next" not in body
    one = (await rest(client, "user.get", token, ID=3)).json()
    assert [u["LAST_NAME"] for u in one["result"]] == ["Смирнова"]
    assert one["total"] == 1


async def test_app_info(client: httpx.AsyncClient, token: str, sandbox: SandboxServer) -> None:
    response = await rest(client, "app.info", token)
    assert response.status_code == 200, response.text
    assert response.json()["result"]["CODE"] == sandbox.config.client_id


async def test_app_info_needs_an_application(client: httpx.AsyncClient) -> None:
    url = await new_webhook(client)
    response = await client.get(url + "app.info")
    assert response.status_code == 400
    assert response.json() == {
        "error": "ACCESS_DENIED",
        "error_description": "Access denied! Application context required",
    }


async def test_scope(client: httpx.AsyncClient, token: str) -> None:
    granted = (await rest(client, "scope", token)).json()["result"]
    assert sorted(granted) == ["catalog", "crm", "user"]
    every = (await rest(client, "scope", token, full="true")).json()["result"]
    assert set(granted) < set(every)


async def test_scope_of_a_webhook(client: httpx.AsyncClient) -> None:
    url = await new_webhook(client, scope="crm")
    assert (await client.get(url + "scope")).json()["result"] == ["crm"]


async def test_server_time_follows_the_clock(
    client: httpx.AsyncClient, token: str, clock: Clock
) -> None:
    first = (await rest(client, "server.time", token)).json()["result"]
    assert isinstance(first, str)
    assert datetime.fromisoformat(first) == datetime.fromtimestamp(T0, UTC)
    clock.advance(1800)
    later = (await rest(client, "server.time", token)).json()["result"]
    assert datetime.fromisoformat(later) == datetime.fromtimestamp(T0 + 1800, UTC)


async def test_methods_lists_what_the_scope_allows(make_sandbox: MakeSandbox) -> None:
    sb = await make_sandbox(scope=("crm",))
    async with httpx.AsyncClient(base_url=sb.base_url) as http:
        token = (await connect(http, sb))["access_token"]
        granted = (await rest(http, "methods", token)).json()["result"]
        every = (await rest(http, "methods", token, full="true")).json()["result"]
    assert {"profile", "app.info", "scope", "crm.deal.list", "crm.deal.add"} <= set(granted)
    assert "user.current" not in granted
    assert "catalog.product.list" not in granted
    assert {"user.current", "catalog.product.list"} <= set(every)


# -- HTTPS ----------------------------------------------------------------------------


async def test_require_https_refuses_plain_http(make_sandbox: MakeSandbox) -> None:
    sb = await make_sandbox(require_https=True)
    async with httpx.AsyncClient(base_url=sb.base_url) as http:
        token = (await connect(http, sb))["access_token"]
        response = await rest(http, "profile", token)
    assert response.status_code == 401
    assert response.json() == {"error": "INVALID_REQUEST", "error_description": "Https required."}


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_files(ca: trustme.CA, tmp_path: Path) -> dict[str, str]:
    server_cert = ca.issue_cert("127.0.0.1")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_bytes(b"".join(blob.bytes() for blob in server_cert.cert_chain_pems))
    key.write_bytes(server_cert.private_key_pem.bytes())
    return {"tls_cert": str(cert), "tls_key": str(key)}


@pytest.fixture
def trusting(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@pytest.fixture
async def https_sandbox(
    make_sandbox: MakeSandbox, tls_files: dict[str, str], request: pytest.FixtureRequest
) -> SandboxServer:
    return await make_sandbox(**tls_files, require_https=request.param)


@pytest.fixture
async def https_client(
    https_sandbox: SandboxServer, trusting: ssl.SSLContext
) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=https_sandbox.base_url, verify=trusting) as http:
        yield http


@pytest.mark.parametrize("https_sandbox", [False, True], indirect=True)
async def test_https_serving(https_sandbox: SandboxServer, https_client: httpx.AsyncClient) -> None:
    assert https_sandbox.base_url.startswith("https://127.0.0.1:")
    tokens = await connect(https_client, https_sandbox)
    assert tokens["client_endpoint"].startswith("https://")
    response = await rest(https_client, "profile", tokens["access_token"])
    assert response.status_code == 200, response.text
    assert response.json()["result"]["ID"] == "1"


async def test_https_server_is_not_trusted_without_its_ca(
    make_sandbox: MakeSandbox, tls_files: dict[str, str]
) -> None:
    sb = await make_sandbox(**tls_files)
    async with httpx.AsyncClient(base_url=sb.base_url) as http:
        with pytest.raises(httpx.ConnectError):
            await http.get("/rest/profile")


async def test_rest_3_paths_answer_errors_in_their_own_shape(
    client: httpx.AsyncClient, token: str
) -> None:
    ok = await client.post("/rest/api/profile", json={"auth": token})
    assert ok.status_code == 200
    assert ok.json()["result"]["ID"] == "1"
    missing = await client.post("/rest/api/no.such.method", json={"auth": token})
    assert missing.status_code == 404
    assert missing.json() == {
        "error": {"code": "ERROR_METHOD_NOT_FOUND", "message": "Method not found!"}
    }
    no_auth = await client.post("/rest/api/profile", json={})
    assert no_auth.json() == {
        "error": {"code": "NO_AUTH_FOUND", "message": "Wrong authorization data"}
    }
