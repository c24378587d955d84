"""The OpenAPI description that Swagger UI (`/docs`) shows 1C developers, and that the
fuzzing in tests/security/test_fuzz_openapi.py takes as the contract of both surfaces."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import Stack

REST_PATHS = (
    "/rest/{method}",
    "/rest/{user_id}/{key}/{method}",
    "/rest/api/{method}",
    "/portals/{name}/rest/{method}",
)
ENCODINGS = {"application/json", "application/x-www-form-urlencoded", "multipart/form-data"}


def resolve(schema: dict[str, Any], node: Any) -> Any:
    """``node`` with its ``$ref`` (one level) followed inside ``schema``."""
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/"), ref
        target: Any = schema
        for part in ref[2:].split("/"):
            target = target[part]
        node = target
    return node


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for value in node.values() for r in refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in refs(value)]
    return []


@pytest.fixture
async def schema(stack: Stack) -> dict[str, Any]:
    response = await stack.http.get("/openapi.json")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


async def test_call_is_described_with_its_body_and_the_client_key(
    stack: Stack, schema: dict[str, Any]
) -> None:
    call = schema["paths"]["/api/v1/call"]["post"]
    body = call["requestBody"]["content"]["application/json"]["schema"]
    assert set(body["properties"]) == {"portal", "domain", "method", "params"}
    assert body["required"] == ["method"]
    assert call["security"] == [{"clientKey": []}]
    assert schema["components"]["securitySchemes"]["clientKey"]["scheme"] == "bearer"
    assert (await stack.http.get("/docs")).status_code == 200


async def test_every_reference_in_the_description_resolves(schema: dict[str, Any]) -> None:
    # A dangling $ref leaves Swagger UI's page with an error and stops the fuzzing.
    found = refs(schema)
    assert len(found) > 20
    for ref in found:
        assert resolve(schema, {"$ref": ref}) is not None, ref


async def test_the_rest_surface_is_described_as_a_bitrix24_client_uses_it(
    schema: dict[str, Any],
) -> None:
    assert set(REST_PATHS) <= set(schema["paths"])
    for path in REST_PATHS:
        operations = schema["paths"][path]
        assert set(operations) == {"get", "post"}, path
        for verb, op in operations.items():
            params = [resolve(schema, p) for p in op["parameters"]]
            in_path = {p["name"] for p in params if p["in"] == "path"}
            assert in_path == {part[1:-1] for part in path.split("/") if part.startswith("{")}
            method = next(p for p in params if p["name"] == "method")
            assert "crm.deal.list" in [e["value"] for e in method["examples"].values()]
            # Parameters in the query string: PHP's brackets, `auth` among them.
            query = next(p for p in params if p["in"] == "query")
            assert "auth" in resolve(schema, query["schema"])["properties"]
            if verb == "post":
                content = op["requestBody"]["content"]
                assert set(content) == ENCODINGS, path
                for encoding in content.values():
                    assert "auth" in resolve(schema, encoding["schema"])["properties"]
            else:
                assert "requestBody" not in op
            ok = resolve(schema, op["responses"]["200"]["content"]["application/json"]["schema"])
            assert ok["required"] == ["result"]


async def test_the_client_key_may_stand_where_bitrix24_takes_a_token(
    schema: dict[str, Any],
) -> None:
    auth = schema["components"]["securitySchemes"]["restAuth"]
    assert (auth["type"], auth["in"], auth["name"]) == ("apiKey", "query", "auth")
    for path in ("/rest/{method}", "/rest/api/{method}", "/portals/{name}/rest/{method}"):
        for op in schema["paths"][path].values():
            assert op["security"] == [{"clientKey": []}, {"restAuth": []}], path
    # The webhook form carries its key in the path and needs nothing else.
    for op in schema["paths"]["/rest/{user_id}/{key}/{method}"].values():
        assert op["security"] == []


async def test_errors_are_described_in_the_shape_each_surface_answers(
    schema: dict[str, Any],
) -> None:
    def error_schema(path: str, status: str) -> dict[str, Any]:
        response = schema["paths"][path]["post"]["responses"][status]
        found: dict[str, Any] = resolve(schema, response["content"]["application/json"]["schema"])
        return found

    bitrix = error_schema("/rest/{method}", "401")
    assert bitrix["properties"]["error"] == {"type": "string"}
    assert "error_description" in bitrix["properties"]
    rest3 = error_schema("/rest/api/{method}", "401")
    assert set(rest3["properties"]["error"]["required"]) == {"code", "message"}
    for path in ("/api/v1/call", "/api/v1/batch", "/api/v1/list"):
        for status in ("400", "401", "default"):
            gateway = error_schema(path, status)
            assert gateway["required"] == ["success", "error", "code", "status"], path
    # Bitrix24's own errors keep Bitrix24's status: any status is described.
    assert "default" in schema["paths"]["/rest/{method}"]["get"]["responses"]


async def test_method_names_are_described_by_the_rule_the_gateway_applies(
    schema: dict[str, Any],
) -> None:
    call = schema["paths"]["/api/v1/call"]["post"]["requestBody"]["content"]
    method = call["application/json"]["schema"]["properties"]["method"]
    assert method["pattern"] == r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$"
    batch = schema["paths"]["/api/v1/batch"]["post"]["requestBody"]["content"]
    command = batch["application/json"]["schema"]["properties"]["commands"]["items"]
    assert command["properties"]["method"]["pattern"] == method["pattern"]
