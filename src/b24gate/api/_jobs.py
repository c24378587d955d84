"""``/api/v1/jobs``: many commands handed over at once and worked through in the background
(docs/jobs.md). The caller gets a job id at once and collects the results later, page by
page or as NDJSON; a job is its client's alone (another key gets 404, as for a job that
does not exist, so ids cannot be probed)."""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from pydantic import BaseModel, Field
from starlette.responses import Response, StreamingResponse

from ..core import MAX_JOB_COMMANDS, Gateway
from ..errors import RequestError, StoreConflict, UnknownJob
from ..store import JobInfo, JobResult, NewJob
from ._body import read_body
from ._bulk import NDJSON, BatchCommand, _inlined, parse_commands
from ._errors import dumps, gateway_shape, json_response
from ._frame import Frame, caller
from ._idempotency import SendHook, keyed, once
from ._parse import json_object, target

_JOB_FIELDS = frozenset({"portal", "domain", "commands", "external_id"})
_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_JOB_ID = re.compile(r"^[0-9a-f]{32}$")
# The states of a command as the API names them (the store's "unknown" is spelled out).
_STATES = {"unknown": "outcome_unknown"}
PAGE_LIMIT = 1000


class JobRequest(BaseModel):
    """The body of ``POST /api/v1/jobs`` (documentation; parsing is stricter, see below)."""

    portal: str | None = Field(None, description="A registered portal's name.")
    domain: str | None = Field(None, description="Or its registered domain.")
    commands: list[BatchCommand] = Field(
        description=f"1 to {MAX_JOB_COMMANDS} independent calls, run in the background.",
        min_length=1,
        max_length=MAX_JOB_COMMANDS,
    )
    external_id: str | None = Field(
        None,
        description=(
            "A field of the `fields` of each `….add` that identifies its record (e.g. "
            "ORIGIN_ID): after a crash the gateway looks such a write up by it instead of "
            "reporting outcome_unknown."
        ),
    )


def _state(state: str) -> str:
    return _STATES.get(state, state)


def job_view(info: JobInfo, portal: str) -> dict[str, Any]:
    counts = {_state(state): count for state, count in info.counts.items()}
    return {
        "id": info.id,
        "portal": portal,
        "state": info.state,
        "total": info.total,
        "counts": counts,
        "done": sum(counts.get(s, 0) for s in ("ok", "error", "outcome_unknown", "cancelled")),
        "external_id": info.external_id,
        "created_at": info.created_at,
        "finished_at": info.finished_at,
        "expires_at": info.expires_at,
    }


def result_item(row: JobResult) -> dict[str, Any]:
    item: dict[str, Any] = {"index": row.seq, "method": row.method, "state": _state(row.state)}
    if row.result is not None:
        item.update(row.result)
    return item


def _job_id(request: Request) -> str:
    job_id = request.path_params["job_id"]
    if not isinstance(job_id, str) or not _JOB_ID.fullmatch(job_id):
        raise UnknownJob("no such job")
    return job_id


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise RequestError(f"`{name}` must be a whole number") from None
    if not low <= value <= high:
        raise RequestError(f"`{name}` must be from {low} to {high}")
    return value


async def _portal_name(gw: Gateway, portal_id: int) -> str:
    return next((p.name for p in await gw.reads.portals() if p.id == portal_id), "-")


async def _own_job(gw: Gateway, request: Request, client_id: int) -> JobInfo:
    info = await gw.store.jobs.get(_job_id(request), client_id)
    if info is None:
        raise UnknownJob("no such job")
    return info


async def _all_results(gw: Gateway, job_id: str) -> AsyncIterator[bytes]:
    after = -1
    while rows := await gw.store.jobs.results(job_id, after=after, limit=PAGE_LIMIT):
        yield b"".join(dumps(result_item(row)) + b"\n" for row in rows)
        after = rows[-1].seq


# The job's id in the path, and the results page's query, for the OpenAPI description.
_JOB_ID_PARAMETER = {
    "name": "job_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": _JOB_ID.pattern},
}
_PAGE_PARAMETERS = [
    {"name": "after", "in": "query", "schema": {"type": "integer", "minimum": -1}},
    {
        "name": "limit",
        "in": "query",
        "schema": {"type": "integer", "minimum": 1, "maximum": PAGE_LIMIT},
    },
    {"name": "format", "in": "query", "schema": {"enum": ["json", "ndjson"]}},
]
_BY_ID = {"security": [{"clientKey": []}], "parameters": [_JOB_ID_PARAMETER]}


def add_job_routes(app: FastAPI) -> None:
    @app.post(
        "/api/v1/jobs",
        status_code=202,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": _inlined(JobRequest.model_json_schema())}
                },
            },
            "security": [{"clientKey": []}],
        },
    )
    async def create_job(request: Request) -> Response:
        """Hand over up to 50,000 commands; the answer (202) names the job at once."""
        gw: Gateway = request.app.state.gateway
        with Frame("api", "/api/v1/jobs") as frame:
            who = await caller(request, gw)
            frame.who = who.client.name
            raw = await read_body(request, gw.settings.job_body_limit)
            key = keyed(request, raw)
            body = json_object(raw, _JOB_FIELDS)
            commands = parse_commands(body.get("commands"), MAX_JOB_COMMANDS)
            frame.method = f"jobs[{len(commands)}]"
            external_id = body.get("external_id")
            if external_id is not None and (
                not isinstance(external_id, str) or not _FIELD_NAME.fullmatch(external_id)
            ):
                raise RequestError("`external_id` must be a field name such as ORIGIN_ID")
            portal_name, domain = target(body)
            # With an Idempotency-Key the job's id follows from it: a submission cut off
            # after the job was stored (the gateway stopped before its answer was kept)
            # runs again and finds the job rather than making a second one.
            job_id = (
                secrets.token_hex(16)
                if key is None
                else hashlib.sha256(f"{who.client.id}:{key.key_hash}".encode()).hexdigest()[:32]
            )

            async def run(_: SendHook | None) -> Response:
                admitted = await gw.dispatcher.admit(
                    who.client,
                    [(c.method, c.params) for c in commands],
                    portal_name=portal_name,
                    domain=domain,
                    address=who.address,
                    entrance="bulk",
                )
                new = NewJob(
                    id=job_id,
                    client_id=who.client.id,
                    portal_id=admitted.portal.id,
                    commands=[
                        (c.method, params)
                        for c, params in zip(commands, admitted.params, strict=True)
                    ],
                    external_id=external_id,
                    address=who.address,
                )
                try:
                    info = await gw.store.jobs.create(new, now=time.time())
                except StoreConflict:
                    found = await gw.store.jobs.get(job_id, who.client.id)
                    if found is None:
                        raise
                    info = found
                gw.jobs.notify()
                frame.status = 202
                return json_response(
                    {"success": True, "job": job_view(info, admitted.portal.name)}, 202
                )

            # Storing a job is one transaction, and its id is the key's: it may run again.
            return await once(
                gw, frame, gateway_shape, key, who.client.id, reads=True, run=run, hooked=False
            )
        return frame.refusal

    @app.get("/api/v1/jobs/{job_id}", openapi_extra=_BY_ID)
    async def job_state(request: Request) -> Response:
        """A job's state and progress: how many commands are in each state."""
        gw: Gateway = request.app.state.gateway
        with Frame("api", "/api/v1/jobs/{id}") as frame:
            who = await caller(request, gw)
            frame.who = who.client.name
            info = await _own_job(gw, request, who.client.id)
            frame.status = 200
            return json_response(
                {"success": True, "job": job_view(info, await _portal_name(gw, info.portal_id))}
            )
        return frame.refusal

    @app.get(
        "/api/v1/jobs/{job_id}/results",
        openapi_extra={**_BY_ID, "parameters": [_JOB_ID_PARAMETER, *_PAGE_PARAMETERS]},
        responses={200: {"content": {NDJSON: {}}}},
    )
    async def job_results(request: Request) -> Response:
        """The commands in order, each with its state and its result or error: a page after
        ``after`` (JSON), or all of them as NDJSON (``format=ndjson``)."""
        gw: Gateway = request.app.state.gateway
        with Frame("api", "/api/v1/jobs/{id}/results") as frame:
            who = await caller(request, gw)
            frame.who = who.client.name
            info = await _own_job(gw, request, who.client.id)
            frame.status = 200
            wants = request.query_params.get("format")
            if wants is None and NDJSON in request.headers.get("accept", ""):
                wants = "ndjson"
            if wants == "ndjson":
                return StreamingResponse(
                    _all_results(gw, info.id),
                    media_type=NDJSON,
                    headers={"Cache-Control": "no-store"},
                )
            if wants not in (None, "json"):
                raise RequestError("`format` must be json or ndjson")
            after = _int_param(request, "after", -1, -1, MAX_JOB_COMMANDS)
            limit = _int_param(request, "limit", PAGE_LIMIT, 1, PAGE_LIMIT)
            rows = await gw.store.jobs.results(info.id, after=after, limit=limit)
            last = rows[-1].seq if rows else after
            return json_response(
                {
                    "success": True,
                    "items": [result_item(row) for row in rows],
                    "next_after": last if last < info.total - 1 else None,
                }
            )
        return frame.refusal

    @app.post("/api/v1/jobs/{job_id}/cancel", openapi_extra=_BY_ID)
    async def cancel_job(request: Request) -> Response:
        """Cancel the commands not yet sent; those on their way finish and are recorded."""
        gw: Gateway = request.app.state.gateway
        with Frame("api", "/api/v1/jobs/{id}/cancel") as frame:
            who = await caller(request, gw)
            frame.who = who.client.name
            info = await gw.store.jobs.cancel(
                _job_id(request),
                who.client.id,
                now=time.time(),
                retention=gw.settings.job_retention,
            )
            if info is None:
                raise UnknownJob("no such job")
            frame.status = 200
            return json_response(
                {"success": True, "job": job_view(info, await _portal_name(gw, info.portal_id))}
            )
        return frame.refusal
