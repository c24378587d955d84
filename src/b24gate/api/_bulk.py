"""``/api/v1/batch`` (many independent calls, answered in order) and ``/api/v1/list`` (every
record of a list method, streamed as NDJSON, or one page at a time behind a cursor)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from functools import partial
from typing import Any

from fastapi import FastAPI, Request
from pydantic import BaseModel, Field
from starlette.responses import Response, StreamingResponse

from ..bitrix import is_read
from ..core import (
    MAX_COMMANDS,
    MAX_PAGE_SIZE,
    Command,
    Gateway,
    Pager,
    decode_cursor,
    encode_cursor,
    list_query,
    read_page,
    run_commands,
)
from ..errors import B24GateError, RequestError
from ._body import read_body
from ._errors import dumps, error_body, gateway_shape, json_response
from ._frame import Frame, caller
from ._idempotency import SendHook, keyed, once
from ._parse import json_object, params_object, target

_BATCH_FIELDS = frozenset({"portal", "domain", "commands"})
_COMMAND_FIELDS = frozenset({"method", "params"})
_LIST_FIELDS = frozenset({"portal", "domain", "method", "params", "page_size", "cursor"})
NDJSON = "application/x-ndjson"


class BatchCommand(BaseModel):
    method: str = Field(description="A Bitrix24 REST method, e.g. crm.deal.add.")
    params: dict[str, Any] = Field(default_factory=dict, description="The method's parameters.")


class BatchRequest(BaseModel):
    """The body of ``POST /api/v1/batch`` (documentation; parsing is stricter, see below)."""

    portal: str | None = Field(None, description="A registered portal's name.")
    domain: str | None = Field(None, description="Or its registered domain.")
    commands: list[BatchCommand] = Field(
        description=f"1 to {MAX_COMMANDS} independent calls; answered in this order.",
        min_length=1,
        max_length=MAX_COMMANDS,
    )


class ListRequest(BaseModel):
    """The body of ``POST /api/v1/list`` (documentation; parsing is stricter, see below)."""

    portal: str | None = Field(None, description="A registered portal's name.")
    domain: str | None = Field(None, description="Or its registered domain.")
    method: str = Field(description="A list method, e.g. crm.deal.list.")
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="`filter`, `select` and other parameters; no `start`, no `order` but ID ASC.",
    )
    page_size: int | None = Field(
        None,
        ge=1,
        le=MAX_PAGE_SIZE,
        description="One JSON page of this many records instead of the NDJSON stream.",
    )
    cursor: str | None = Field(None, description="`next_cursor` of the previous page.")


@dataclass(frozen=True)
class BatchBody:
    commands: list[Command]
    portal: str | None
    domain: str | None


@dataclass(frozen=True)
class ListBody:
    method: str
    params: dict[str, Any]
    portal: str | None
    domain: str | None
    page_size: int | None
    cursor: str | None


def parse_batch(raw: bytes) -> BatchBody:
    body = json_object(raw, _BATCH_FIELDS)
    return BatchBody(parse_commands(body.get("commands"), MAX_COMMANDS), *target(body))


def parse_commands(items: Any, limit: int) -> list[Command]:
    """``commands``: 1 to ``limit`` objects ``{method, params}`` (a batch's, a job's)."""
    if not isinstance(items, list) or not items:
        raise RequestError("`commands` is required: a non-empty list of {method, params}")
    if len(items) > limit:
        raise RequestError(f"at most {limit} commands a request, not {len(items)}")
    commands = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise RequestError(f"commands[{i}] must be an object {{method, params}}")
        unknown = sorted(set(item) - _COMMAND_FIELDS)
        if unknown:
            raise RequestError(f"commands[{i}]: unknown field(s): {', '.join(unknown)}")
        method = item.get("method")
        if not isinstance(method, str) or not method:
            raise RequestError(f"commands[{i}]: `method` is required and must be a string")
        commands.append(Command(method, params_object(item.get("params"), f"commands[{i}].params")))
    return commands


def parse_list(raw: bytes) -> ListBody:
    body = json_object(raw, _LIST_FIELDS)
    method = body.get("method")
    if not isinstance(method, str) or not method:
        raise RequestError("`method` is required and must be a string")
    page_size, cursor = body.get("page_size"), body.get("cursor")
    if page_size is not None and (
        not isinstance(page_size, int)
        or isinstance(page_size, bool)
        or not 1 <= page_size <= MAX_PAGE_SIZE
    ):
        raise RequestError(f"`page_size` must be a whole number from 1 to {MAX_PAGE_SIZE}")
    if cursor is not None:
        if not isinstance(cursor, str) or not cursor:
            raise RequestError("`cursor` must be a non-empty string")
        if page_size is None:
            raise RequestError("`cursor` goes with `page_size`")
    return ListBody(
        method, params_object(body.get("params"), "params"), *target(body), page_size, cursor
    )


def _entry(outcome: dict[str, Any] | B24GateError) -> dict[str, Any]:
    """One command's place in the answer: Bitrix24's result, or the error as /call gives it."""
    if isinstance(outcome, B24GateError):
        error = error_body(outcome)
        del error["success"]
        return {"error": error}
    entry = {"result": outcome.get("result")}
    for extra in ("total", "next"):
        if extra in outcome:
            entry[extra] = outcome[extra]
    return entry


def _line(value: Any) -> bytes:
    return dumps(value) + b"\n"


async def _ndjson(
    pager: Pager,
    first: list[list[dict[str, Any]]],
    known: Callable[[Exception], B24GateError],
    finish: Callable[[int], None],
) -> AsyncIterator[bytes]:
    """One record a line, then ``{"count": N}``; or, when a later request fails, a last line
    ``{"error": {...}}`` instead (the status, 200, has been sent by then): the error as
    ``known`` (the request's :meth:`Frame.known`) makes it one of the tree.

    After the first request's pages, the rest comes from :meth:`Pager.stream`, which holds
    a bounded number of requests' pages; closing it (the client went away) cancels its
    requests in flight."""
    count, status = 0, 200
    try:
        for page in first:
            count += len(page)
            yield b"".join(_line(record) for record in page)
        first.clear()  # let these go before the next arrive
        async with aclosing(pager.stream()) as pages:
            async for page in pages:
                count += len(page)
                yield b"".join(_line(record) for record in page)
        yield _line({"count": count})
    except Exception as exc:
        error = known(exc)
        status = error.status
        yield _line(_entry(error))
    except BaseException:  # the client went away (GeneratorExit) or the server stops
        status = 499
        raise
    finally:
        finish(status)


def _inlined(schema: dict[str, Any]) -> dict[str, Any]:
    """A model's JSON schema with its ``$defs`` put in place: a ``#/$defs/…`` reference would
    not resolve inside the OpenAPI document."""
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    inlined: dict[str, Any] = resolve(schema)
    return inlined


def add_bulk_routes(app: FastAPI) -> None:
    def described(model: type[BaseModel]) -> dict[str, Any]:
        return {
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _inlined(model.model_json_schema())}},
            },
            "security": [{"clientKey": []}],
        }

    @app.post("/api/v1/batch", openapi_extra=described(BatchRequest))
    async def batch(request: Request) -> Response:
        """Many independent calls to one portal; each gets its own result or error, in order."""
        gw: Gateway = request.app.state.gateway
        with Frame("api", "/api/v1/batch") as frame:
            frame.method = "batch"
            who = await caller(request, gw)
            frame.who = who.client.name
            raw = await read_body(request, gw.settings.body_limit)
            key = keyed(request, raw)
            payload = parse_batch(raw)
            frame.method = f"batch[{len(payload.commands)}]"

            async def run(on_send: SendHook | None) -> Response:
                # Raises only before anything is sent: the batch is admitted as a whole
                # first, and each command's failure is its own entry of the answer.
                done = await run_commands(
                    gw.dispatcher,
                    who.client,
                    payload.commands,
                    portal_name=payload.portal,
                    domain=payload.domain,
                    address=who.address,
                )
                frame.served(done)
                return json_response(
                    {"success": True, "results": [_entry(outcome) for outcome in done.outcomes]}
                )

            reads = all(is_read(c.method, c.params) for c in payload.commands)
            return await once(
                gw, frame, gateway_shape, key, who.client.id, reads=reads, run=run, hooked=False
            )
        return frame.refusal

    @app.post(
        "/api/v1/list",
        openapi_extra=described(ListRequest),
        responses={200: {"content": {NDJSON: {}}}},
    )
    async def list_(request: Request) -> Response:
        """Every record of a list method, in ID order: NDJSON, or one page with `page_size`."""
        gw: Gateway = request.app.state.gateway
        with Frame("api", "/api/v1/list") as frame:
            who = await caller(request, gw)
            frame.who = who.client.name
            payload = parse_list(await read_body(request, gw.settings.body_limit))
            frame.method = payload.method[:100]
            query = list_query(payload.method, payload.params)
            after = query.after
            if payload.cursor is not None:
                after = max(after, decode_cursor(query, payload.cursor))
            call = partial(
                gw.dispatcher.call,
                who.client,
                portal_name=payload.portal,
                domain=payload.domain,
                address=who.address,
            )
            pager = Pager(call, query, after)
            # The pager's portal and upstream time go into the line even when it fails.
            frame.source = pager
            if payload.page_size is not None:
                items, next_after = await read_page(pager, payload.page_size)
                frame.served(pager)
                return json_response(
                    {
                        "success": True,
                        "items": items,
                        "next_cursor": None
                        if next_after is None
                        else encode_cursor(query, next_after),
                    }
                )
            # The first request before the answer starts: a refusal is then a plain error.
            # It also finds the list's highest ID, for the ranges of the rest.
            first = await pager.fetch(probe=True)
            return StreamingResponse(
                _ndjson(pager, first, frame.known, frame.later()),
                media_type=NDJSON,
                headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
            )
        return frame.refusal
