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

import asyncio
import re
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from starlette.convertors import Convertor, register_url_convertor
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.responses import Response

from .._json import BOM, read_json
from .._php import (
    MAX_INPUT_NESTING,
    MAX_INPUT_VARS,
    NestingTooDeep,
    Params,
    TooManyVariables,
    parse_php_pairs,
    raw_pairs,
    unquote,
    unquote_bytes,
)
from ..bitrix import is_read
from ..core import Gateway, bearer
from ..errors import (
    B24GateError,
    BitrixError,
    BodyTooLarge,
    Forbidden,
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    IdempotentOutcomeUnknown,
    InvalidJson,
    InvalidMethod,
    LockTimeout,
    NeedsAuthorization,
    OAuthError,
    OutcomeUnknown,
    RateLimited,
    RequestError,
    TokenRejected,
    TooDeep,
    TooManyParameters,
    Unauthorized,
    UnknownPortal,
    UpstreamError,
)
from ._body import read_body
from ._errors import Shape, bitrix_words, json_response, reduced_batch
from ._frame import Caller, Frame, caller
from ._idempotency import SendHook, keyed, once, split_query
from ._parse import check_depth_yielding

# The only look a request gets at what it sent before its key is checked: a search from the
# end (in C) for the last `auth` (PHP keeps the last one). The full parse afterwards must find
# the same key there, so that a search and a parser that disagree refuse the request
# rather than let it through.
_JSON_KEY = re.compile(rb'"auth"\s*:\s*"(b24_[0-9a-f]{12}_[A-Za-z0-9_-]{43})"')
# How many `"auth"` from the end a JSON body is searched for one holding a key: a client's
# own parameter named `auth` may come after the key (the clients put theirs last).
_JSON_TRIES = 8
# A value longer than this is decoded a slice at a time, the event loop free in between:
# an authenticated client's 8 MiB of `%4` is most of a second of decoding, which other
# requests (and /healthz) must not wait for. (A worker thread would not help: the decoder
# is C code that holds the GIL.)
_SLICE = 64 * 1024


class _Tail(Convertor[str]):
    """Starlette's ``path``, but newlines too: a ``%0A`` in a method name must reach the
    handler (a Bitrix24-shaped 401 or 404, one escaped log line), not FastAPI's own 404."""

    regex = "(?s:.*)"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("rest_tail", _Tail())


@dataclass(frozen=True)
class Target:
    """What the path says: the method, a webhook-style key, REST 3.0 or not."""

    method: str
    path_key: str | None
    v3: bool  # a REST 3.0 path: /rest/api/...


def _split_path(tail: str) -> Target:
    """The :class:`Target` of what follows ``/rest/``."""
    v3 = tail.startswith("api/")
    if v3:
        tail = tail[4:]
    parts = tail.split("/")
    method = parts[-1]
    # Bitrix24 drops one final `.json` whatever its case (`batch.JSON` runs `batch`); a name
    # still ending in `.json` or `.xml` after that is refused by admission
    # (:func:`~b24gate.bitrix.valid_method`), `.xml` before it (handle()).
    if method[-5:].lower() == ".json":
        method = method[:-5]
    if len(parts) == 3:
        return Target(method, parts[1], v3)
    if len(parts) != 1:
        return Target("", None, v3)
    return Target(method, None, v3)


def _kind(request: Request, raw: bytes) -> str:
    """``multipart``, ``json`` or ``form``: how the body is read, as Bitrix24 reads it."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        return "multipart"
    # (Any run of the BOM's three bytes is skipped, not only one BOM: a body that starts so
    # is read as the JSON it then is, or refused as JSON that is not.)
    if content_type == "application/json" or raw.lstrip(BOM).lstrip()[:1] == b"{":
        return "json"
    return "form"


def _form_key(text: str) -> str | None:
    """The value of a query string's or form's last ``auth=`` pair."""
    at = text.rfind("&auth=")
    if at >= 0:
        start = at + 6
    elif text.startswith("auth="):
        start = 5
    else:
        return None
    end = text.find("&", start)
    value = text[start:] if end < 0 else text[start:end]
    # A key is 64 characters; anything much longer is no key, and is not decoded.
    return unquote(value) if 0 < len(value) <= 256 else None


def _json_key(raw: bytes) -> str | None:
    """A client key in one of a JSON body's last ``"auth"`` fields."""
    end = len(raw)
    for _ in range(_JSON_TRIES):
        at = raw.rfind(b'"auth"', 0, end)
        if at < 0:
            return None
        found = _JSON_KEY.match(raw, at)
        if found:
            return found.group(1).decode()
        end = at
    return None


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise RequestError("the form is not UTF-8") from None


def _too_many() -> TooManyParameters:
    return TooManyParameters(f"more than {MAX_INPUT_VARS} parameters (PHP's max_input_vars)")


def _nested(pairs: list[tuple[str, str]]) -> Params:
    """Decoded pairs nested by PHP's rules, PHP's caps refused with a clear error."""
    try:
        return parse_php_pairs(pairs, strict=True)
    except TooManyVariables:
        raise _too_many() from None
    except NestingTooDeep as exc:
        raise TooDeep(str(exc)) from None


async def _decoded(text: str) -> str:
    if len(text) <= _SLICE:
        return unquote(text)
    parts = []
    start = 0
    while start < len(text):
        end = start + _SLICE
        # Never cut inside an escape: a `%` among the slice's last two characters starts
        # the next slice.
        end = text.rfind("%", end - 2, end) if "%" in text[end - 2 : end] else end
        parts.append(unquote_bytes(text[start:end]))
        start = end
        await asyncio.sleep(0)
    return b"".join(parts).decode("utf-8", "replace")


async def _form(text: str) -> Params:
    """A query string or form, by PHP's rules and caps, decoded a slice at a time."""
    pairs = []
    for count, (name, value) in enumerate(raw_pairs(text), 1):
        if count > MAX_INPUT_VARS:
            raise _too_many()
        pairs.append((await _decoded(name), await _decoded(value)))
    return _nested(pairs)


async def _once(raw: bytes) -> AsyncGenerator[bytes, None]:
    yield raw


async def _multipart(request: Request, raw: bytes, limit: int) -> list[tuple[str, str]]:
    """The text fields of a multipart body (files are ignored, as documented). The body is
    read within the limit first: the form parser bounds each part and the number of fields
    (PHP's 1,000), not the whole body. A malformed body is the client's error (400)."""
    parser = MultiPartParser(
        request.headers,
        _once(raw),
        max_files=MAX_INPUT_VARS,
        max_fields=MAX_INPUT_VARS,
        max_part_size=limit,
    )
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise RequestError(f"the multipart body is malformed: {exc.message}") from None
    try:
        return [(k, v) for k, v in form.multi_items() if not isinstance(v, UploadFile)]
    finally:
        await form.close()


async def _json_body(raw: bytes) -> Params:
    try:
        body = read_json(raw) if raw.removeprefix(BOM).strip() else {}
    except ValueError:
        raise InvalidJson("the body is not valid UTF-8 JSON") from None
    if not isinstance(body, dict):
        raise InvalidJson("the body must be a JSON object")
    # The top-level object stands for $_REQUEST; its values nest as deep as brackets may.
    await check_depth_yielding(body, "the body", MAX_INPUT_NESTING + 1)
    return body


async def _body_params(kind: str, raw: bytes, pairs: list[tuple[str, str]] | None) -> Params:
    if kind == "json":
        return await _json_body(raw)
    if pairs is not None:
        return _nested(pairs)
    return await _form(_text(raw)) if raw else {}


@dataclass
class RestRequest:
    """A ``/rest/`` request, its client authenticated before its parameters were parsed."""

    target: Target
    caller: Caller
    params: Params
    body: bytes  # as sent (an idempotency key's fingerprint covers it)


async def _caller(request: Request, gw: Gateway, key: str | None, *, in_url: bool) -> Caller:
    if key is None:
        raise Unauthorized("no client key")
    found = await caller(request, gw, key)
    if in_url and not found.client.allow_url_key:
        # The key was in a URL (path or query string), where proxies' access logs keep it;
        # refuse it the same way as a bad key, so that a probe learns nothing.
        raise Unauthorized("this key may not travel in a URL")
    return found


def _same_key(key: str, *others: Any) -> None:
    for other in others:
        if other is not None and other != key:
            raise Unauthorized("the request carries different client keys")


async def _key_in_body(
    request: Request, kind: str, raw: bytes, limit: int
) -> tuple[str | None, list[tuple[str, str]] | None]:
    """The key a body carries as ``auth``, found without parsing the body (a multipart
    form, at most 1,000 fields, is parsed: its fields come back for the later parse)."""
    if kind == "multipart":
        pairs = await _multipart(request, raw, limit)
        found = [value for name, value in pairs if name == "auth"]
        return (found[-1] if found else None), pairs
    if kind == "json":
        return _json_key(raw), None
    return _form_key(_text(raw)), None


async def parse(request: Request, target: Target, gw: Gateway, query: str) -> RestRequest:
    """Authenticate, then parse. The key comes from the path, the query string or the
    ``Authorization`` header without anything being parsed; only when it is in none of
    them is the body read for it. A request without a valid key costs a scan, never a
    parse of what it sent. ``query``: the request's, its ``idempotency_key`` taken out
    (:func:`._idempotency.split_query`): the gateway's parameter, never the portal's."""
    limit = gw.settings.body_limit
    query_key = _form_key(query)
    header_key = bearer(request.headers.get("authorization"))
    outside = [k for k in (target.path_key, query_key, header_key) if k is not None]
    who: Caller | None = None
    if outside:
        key: str | None = outside[0]
        _same_key(outside[0], *outside[1:])
        in_url = target.path_key is not None or query_key is not None
        who = await _caller(request, gw, key, in_url=in_url)
    raw = await read_body(request, limit) if request.method == "POST" else b""
    kind = _kind(request, raw) if raw else "form"
    pairs = None
    in_body = who is None
    if who is None:
        key, pairs = await _key_in_body(request, kind, raw, limit)
        who = await _caller(request, gw, key, in_url=False)
    elif kind == "multipart":
        pairs = await _multipart(request, raw, limit)
    assert key is not None  # _caller refuses a missing key
    from_query = await _form(query)
    if "auth" in from_query and not who.client.allow_url_key:
        # Whether the URL carries a key is what the parse says, not the search: `%61uth=`
        # is `auth` to PHP too, and a proxy's log keeps it all the same.
        raise Unauthorized("this key may not travel in a URL")
    from_body = await _body_params(kind, raw, pairs)
    body_key = from_body.pop("auth", None)
    if in_body and body_key is None:
        # The search found the key somewhere in the body (`{"fields": {"auth": key}}`), but
        # a key authenticates only as the top-level `auth` Bitrix24 would read.
        raise Unauthorized("the body's key is not its top-level `auth`")
    # Neither part may name another key than the one checked; `auth` never goes upstream.
    query_key = from_query.pop("auth", None)
    _same_key(key, query_key, body_key)
    # Nor the key itself as data (`{"fields": {"TITLE": key}}`): a portal's users would
    # read the gateway's credential. A count in C of the key as sent (its characters need
    # no escaping), the one `auth` that carried it aside.
    if raw.count(key.encode()) > (body_key is not None) or query.count(key) > (
        query_key is not None
    ):
        raise RequestError("the client key is among the parameters; it is never sent on")
    # PHP's $_REQUEST: the body's values win over the query string's.
    return RestRequest(target, who, {**from_query, **from_body}, raw)


def bitrix_error(exc: B24GateError, *, url_key: bool) -> tuple[int, str, str]:
    """``(status, error, error_description)`` in Bitrix24's terms."""
    if isinstance(exc, BitrixError) and not isinstance(exc, TokenRejected):
        # Bitrix24's own error: its status and two fields, never the rest of its body (the
        # gateway's token is already scrubbed from them where the call was made).
        words = bitrix_words({"error": exc.error, "error_description": exc.description})
        return exc.status, words["error"], words["error_description"]
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
        if isinstance(exc, InvalidMethod):
            return 404, "ERROR_METHOD_NOT_FOUND", "Method not found!"
        return 400, "INVALID_REQUEST", exc.message
    if isinstance(exc, IdempotencyKeyReused):
        return 422, "IDEMPOTENCY_KEY_REUSED", exc.message
    if isinstance(exc, IdempotencyKeyInUse):
        return 409, "IDEMPOTENCY_KEY_IN_USE", exc.message
    if isinstance(exc, OutcomeUnknown | IdempotentOutcomeUnknown):
        # A 4xx on purpose: the clients retry every 5xx on their own, and a write that may
        # have been done must not be sent again blindly.
        return 409, "UPSTREAM_OUTCOME_UNKNOWN", exc.message
    if isinstance(exc, UpstreamError):
        return exc.status, "INTERNAL_SERVER_ERROR", exc.message
    if isinstance(exc, OAuthError):
        return 503, "INTERNAL_SERVER_ERROR", "the portal's OAuth server is unavailable; retry later"
    if isinstance(exc, LockTimeout):
        # Another request is refreshing the portal's token: a moment's wait (503 with
        # Retry-After, as on /api/v1), not the gateway's failure.
        return 503, "INTERNAL_SERVER_ERROR", "the portal's token is being refreshed; retry later"
    return 500, "INTERNAL_SERVER_ERROR", "Internal server error"


def bitrix_shape(*, url_key: bool, v3: bool) -> Shape:
    """The ``/rest/`` surface's :data:`~._errors.Shape`: :func:`bitrix_error`'s words as
    Bitrix24's ``{error, error_description}``, or REST 3.0's ``{error: {code, message}}``
    (docs/protocol.md §6)."""

    def shape(exc: B24GateError) -> tuple[int, Any]:
        status, error, description = bitrix_error(exc, url_key=url_key)
        if v3:
            return status, {"error": {"code": error, "message": description}}
        return status, {"error": error, "error_description": description}

    return shape


def add_rest_routes(app: FastAPI) -> None:
    async def handle(request: Request, tail: str, portal_name: str | None) -> Response:
        gw: Gateway = request.app.state.gateway
        target = _split_path(tail)
        shape = bitrix_shape(url_key=target.path_key is not None, v3=target.v3)
        with Frame("rest", "/rest/", shape) as frame:
            frame.method = target.method[:100]
            if target.method.lower().endswith(".xml"):
                # Bitrix24 reads `.xml` as "answer in XML": it would do the call and the
                # gateway, which reads JSON, would lose the answer (a write done, reported
                # as a failure).
                raise RequestError("XML answers are not supported: use the .json suffix or none")
            query = split_query(request.url.query)
            rest = await parse(request, target, gw, query.rest)
            frame.who = rest.caller.client.name
            key = keyed(request, rest.body, query)

            async def run(on_send: SendHook | None) -> Response:
                result = await gw.dispatcher.call(
                    rest.caller.client,
                    target.method,
                    rest.params,
                    portal_name=portal_name,
                    address=rest.caller.address,
                    v3=target.v3,
                    on_send=on_send,
                )
                frame.served(result)
                body = result.body
                if not target.v3 and target.method.lower() == "batch":
                    body = reduced_batch(body)
                return json_response(body)

            reads = is_read(target.method, rest.params)
            client_id = rest.caller.client.id
            return await once(gw, frame, shape, key, client_id, reads=reads, run=run)
        return frame.refusal

    async def rest_only(request: Request) -> Response:
        return await handle(request, request.path_params["tail"], None)

    async def rest_named(request: Request) -> Response:
        return await handle(request, request.path_params["tail"], request.path_params["name"])

    for path, endpoint in (
        ("/rest/{tail:rest_tail}", rest_only),
        ("/portals/{name}/rest/{tail:rest_tail}", rest_named),
    ):
        app.add_route(path, endpoint, methods=["GET", "POST"], include_in_schema=False)
