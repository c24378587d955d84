"""The Bitrix24-shaped surface: existing clients move behind b24gate by changing one URL.

Requests and answers are Bitrix24's own: parameters as query, PHP-bracket form, multipart
or JSON; answers unwrapped (``result``, ``total``, ``next``, ``time``) with Bitrix24's
statuses. The client key stands where a Bitrix24 token would: ``auth`` in the query or body,
``Authorization: Bearer``, or (when enabled per client) the webhook-style path
``/rest/<user id>/<client key>/<method>``. Gateway-side failures take Bitrix24's error
shape, chosen so that the clients' own handling does the right thing: a bad key is 401
``NO_AUTH_FOUND`` (never ``expired_token``, which would make a client try to refresh a
key), the queue full is 503 ``QUERY_LIMIT_EXCEEDED``, which clients already back off on.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.responses import Response

from .._php import Params, parse_php_pairs, parse_php_query
from ..core import Gateway, authenticate, peer_address
from ..errors import (
    B24GateError,
    BitrixError,
    BodyTooLarge,
    Forbidden,
    NeedsAuthorization,
    OAuthError,
    OutcomeUnknown,
    RateLimited,
    RequestError,
    TokenRejected,
    Unauthorized,
    UnknownPortal,
    UpstreamError,
)
from ..store import Client
from ._body import read_body
from ._errors import dumps, log_call

log = logging.getLogger("b24gate.calls")
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class RestRequest:
    method: str
    params: Params
    key: str | None
    url_key: bool  # the key came in the URL path (webhook style)
    v3: bool  # a REST 3.0 path: /rest/api/...


def _split_path(tail: str) -> tuple[str, str | None, bool]:
    """``(method, key from the path, is REST 3.0)`` from what follows ``/rest/``."""
    v3 = tail.startswith("api/")
    if v3:
        tail = tail[4:]
    parts = tail.split("/")
    method = parts[-1].removesuffix(".json")
    if len(parts) == 3:
        return method, parts[1], v3
    if len(parts) != 1:
        return "", None, v3
    return method, None, v3


async def _once(raw: bytes) -> AsyncGenerator[bytes, None]:
    yield raw


async def _params(request: Request, limit: int) -> Params:
    params = parse_php_query(request.url.query)
    if request.method != "POST":
        return params
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    raw = await read_body(request, limit)
    if content_type == "multipart/form-data":
        # The body is read within the limit first: the form parser bounds each part, not
        # the whole body. A malformed body is the client's error (400), not ours (500).
        parser = MultiPartParser(request.headers, _once(raw), max_part_size=limit)
        try:
            form = await parser.parse()
        except MultiPartException as exc:
            raise RequestError(f"the multipart body is malformed: {exc.message}") from None
        try:
            params.update(
                parse_php_pairs(
                    (k, v) for k, v in form.multi_items() if not isinstance(v, UploadFile)
                )
            )
        finally:
            await form.close()
        return params
    if content_type == "application/json" or raw.lstrip(_BOM).lstrip()[:1] == b"{":
        try:
            body = json.loads(raw.removeprefix(_BOM).decode("utf-8") or "{}")
        except (UnicodeDecodeError, ValueError):
            raise RequestError("the body is not valid UTF-8 JSON", code="invalid_json") from None
        if not isinstance(body, dict):
            raise RequestError("the body must be a JSON object", code="invalid_json")
        params.update(body)
    elif raw:
        try:
            params.update(parse_php_query(raw.decode("utf-8")))
        except UnicodeDecodeError:
            raise RequestError("the form is not UTF-8", code="invalid_request") from None
    return params


async def parse(request: Request, tail: str, limit: int) -> RestRequest:
    method, path_key, v3 = _split_path(tail)
    if method.lower().endswith(".xml"):
        # Bitrix24 reads `.xml` as "answer in XML": it would do the call and the gateway,
        # which reads JSON, would lose the answer (a write done, reported as a failure).
        raise RequestError("XML answers are not supported: use the .json suffix or none")
    params = await _params(request, limit)
    body_key = params.pop("auth", None)
    if path_key is not None:
        return RestRequest(method, params, path_key, True, v3)
    header = request.headers.get("authorization")
    key = body_key if isinstance(body_key, str) and body_key else None
    if key is None and header and header.lower().startswith("bearer "):
        key = header[7:].strip()
    return RestRequest(method, params, key, False, v3)


def bitrix_error(exc: B24GateError, *, url_key: bool) -> tuple[int, str, str]:
    """``(status, error, error_description)`` in Bitrix24's terms for a gateway-side error."""
    if isinstance(exc, Unauthorized):
        if url_key:
            return 401, "INVALID_CREDENTIALS", "Invalid request credentials"
        return 401, "NO_AUTH_FOUND", "Wrong authorization data"
    if isinstance(exc, Forbidden | UnknownPortal | NeedsAuthorization):
        return 403, "ACCESS_DENIED", exc.message
    if isinstance(exc, TokenRejected):
        # The portal refused the gateway's own token even after a refresh (a portal clock
        # off, an app being removed). Passed through, expired_token would make a client
        # "refresh" its client key.
        return 403, "ACCESS_DENIED", f"the portal refused the gateway's token ({exc.error})"
    if isinstance(exc, RateLimited):
        if exc.operation_time:
            return 429, "OPERATION_TIME_LIMIT", "Method is blocked due to operation time limit"
        return 503, "QUERY_LIMIT_EXCEEDED", "Too many requests"
    if isinstance(exc, BodyTooLarge):
        return 413, "INVALID_REQUEST", exc.message
    if isinstance(exc, RequestError):
        if exc.code == "invalid_method":
            return 404, "ERROR_METHOD_NOT_FOUND", "Method not found!"
        return 400, "INVALID_REQUEST", exc.message
    if isinstance(exc, OutcomeUnknown):
        # A 4xx on purpose: the clients retry every 5xx on their own, and a write that may
        # have been done must not be sent again blindly.
        return 409, "UPSTREAM_OUTCOME_UNKNOWN", exc.message
    if isinstance(exc, UpstreamError):
        return exc.status, "INTERNAL_SERVER_ERROR", exc.message
    if isinstance(exc, OAuthError):
        return 503, "INTERNAL_SERVER_ERROR", "the portal's OAuth server is unavailable; retry later"
    return 500, "INTERNAL_SERVER_ERROR", "Internal server error"


def _answer(body: Any, status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(body), status_code=status, media_type="application/json", headers=headers)


def error_response(exc: B24GateError, *, url_key: bool, v3: bool) -> Response:
    if isinstance(exc, BitrixError) and not isinstance(exc, TokenRejected):
        body = (
            exc.body
            if isinstance(exc.body, dict)
            else {
                "error": exc.error,
                "error_description": exc.description,
            }
        )
        return _answer(body, exc.status)
    status, error, description = bitrix_error(exc, url_key=url_key)
    headers = {}
    if isinstance(exc, RateLimited):
        headers["Retry-After"] = str(max(1, int(exc.retry_after + 0.999)))
    if v3:
        # REST 3.0's error shape (protocol file §6).
        return _answer({"error": {"code": error, "message": description}}, status, headers)
    return _answer({"error": error, "error_description": description}, status, headers)


async def _client(gw: Gateway, rest: RestRequest) -> Client:
    if rest.key is None:
        raise Unauthorized("no client key")
    await gw.reads.refresh()
    client = await authenticate(gw.reads, f"Bearer {rest.key}")
    if rest.url_key and not client.allow_url_key:
        # The key was in a URL; refuse it the same way, so that a probe learns nothing.
        raise Unauthorized("this key may not travel in a URL")
    return client


def add_rest_routes(app: FastAPI) -> None:
    async def handle(request: Request, tail: str, portal_name: str | None) -> Response:
        gw: Gateway = request.app.state.gateway
        started = time.perf_counter()
        who, portal, method, status, upstream_ms = "-", "-", "-", 500, 0.0
        url_key = v3 = False
        try:
            rest = await parse(request, tail, gw.settings.body_limit)
            url_key, v3 = rest.url_key, rest.v3
            method = rest.method[:100]
            client = await _client(gw, rest)
            who = client.name
            address = peer_address(
                request.client.host if request.client else None,
                request.headers.getlist("x-forwarded-for"),
                gw.settings.trusted_proxies,
            )
            result = await gw.dispatcher.call(
                client,
                rest.method,
                rest.params,
                portal_name=portal_name,
                address=address,
                v3=rest.v3,
            )
            portal, upstream_ms, status = result.portal, result.upstream_ms, 200
            return _answer(result.body, 200)
        except B24GateError as exc:
            response = error_response(exc, url_key=url_key, v3=v3)
            status = response.status_code
            return response
        except Exception:
            log.exception(
                "unexpected error on the /rest/ surface (client=%s method=%s)", who, method
            )
            status = 500
            return error_response(B24GateError("internal error"), url_key=url_key, v3=v3)
        finally:
            log_call(who, portal, method, status, started, upstream_ms, "rest")

    async def rest_only(request: Request) -> Response:
        return await handle(request, request.path_params["tail"], None)

    async def rest_named(request: Request) -> Response:
        return await handle(request, request.path_params["tail"], request.path_params["name"])

    for path, endpoint in (
        ("/rest/{tail:path}", rest_only),
        ("/portals/{name}/rest/{tail:path}", rest_named),
    ):
        app.add_route(path, endpoint, methods=["GET", "POST"], include_in_schema=False)
