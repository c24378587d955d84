"""The OpenAPI description that Swagger UI (`/docs`) shows 1C developers."""

from __future__ import annotations

from .conftest import Stack


async def test_call_is_described_with_its_body_and_the_client_key(stack: Stack) -> None:
    schema = (await stack.http.get("/openapi.json")).json()
    call = schema["paths"]["/api/v1/call"]["post"]
    body = call["requestBody"]["content"]["application/json"]["schema"]
    assert set(body["properties"]) == {"portal", "domain", "method", "params"}
    assert body["required"] == ["method"]
    assert call["security"] == [{"clientKey": []}]
    assert schema["components"]["securitySchemes"]["clientKey"]["scheme"] == "bearer"
    assert (await stack.http.get("/docs")).status_code == 200
