"""Denial of service through parsing: hostile bodies against a running gateway.

The attack (issue 10, finding 3): one unauthenticated request whose body makes the parser
work for seconds on the event loop stalls every other request, `/healthz` included. Each
test sends the hostile request as an attacker would and, while it is in flight, polls
`/healthz` the way a load balancer does; the gateway must keep answering within 100 ms,
and the hostile request must get a 4xx with a code, never a 500.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from .conftest import Stack

HEALTHY = 0.1  # seconds: what a load balancer's health check tolerates, with margin
BODY_LIMIT = 8 * 1024 * 1024  # the default B24GATE_BODY_LIMIT
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
JSON = {"Content-Type": "application/json"}
# Each attack is bounded: before the fix the first one alone stalled the gateway for hours.
ATTACK_TIMEOUT = 60.0


@dataclass(frozen=True)
class Hostile:
    """One attacker's request."""

    path: str
    content: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    method: str = "POST"


# The attacker is a process of its own, as it would be: the megabytes it builds and sends
# cost the gateway's process nothing, so the poll measures the gateway alone.
_ATTACKER = """
import http.client, json, sys
port, method, path, headers = int(sys.argv[1]), sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
body = sys.stdin.buffer.read()
connection = http.client.HTTPConnection("127.0.0.1", port, timeout=float(sys.argv[5]))
connection.request(method, path, body=body or None, headers=headers)
answer = connection.getresponse()
json.dump({"status": answer.status, "body": answer.read().decode()}, sys.stdout)
"""


@dataclass(frozen=True)
class Answer:
    status_code: int
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


async def _send(stack: Stack, hostile: Hostile) -> Answer:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _ATTACKER,
        str(urlsplit(stack.base_url).port),
        hostile.method,
        hostile.path,
        json.dumps(hostile.headers),
        str(ATTACK_TIMEOUT),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await process.communicate(hostile.content)
    assert process.returncode == 0
    answer = json.loads(out)
    return Answer(answer["status"], answer["body"])


async def healthz_during(stack: Stack, attacks: list[Hostile]) -> tuple[list[Answer], float]:
    """Send ``attacks``, one after another, while polling /healthz until the last is
    answered: their answers and the slowest /healthz answer, in seconds.

    A poll counts as slow by the lesser of its wall time and the CPU time this process
    (gateway, sandbox and probe, every thread) spent meanwhile: a gateway busy with hostile
    input shows in both, a loaded machine that merely scheduled the process out shows in
    the wall time alone, and is not the gateway's doing."""

    async def attacker() -> list[Answer]:
        return [await _send(stack, hostile) for hostile in attacks]

    sent = asyncio.ensure_future(attacker())
    slowest = 0.0
    async with (
        asyncio.timeout(ATTACK_TIMEOUT),
        httpx.AsyncClient(base_url=stack.base_url, timeout=ATTACK_TIMEOUT) as probe,
    ):
        await probe.get("/healthz")  # a warm connection: the poll measures the gateway
        while not sent.done():
            started, spent = time.perf_counter(), time.process_time()
            health = await probe.get("/healthz")
            busy = min(time.perf_counter() - started, time.process_time() - spent)
            slowest = max(slowest, busy)
            assert health.status_code == 200
            await asyncio.sleep(0.005)
    return await sent, slowest


def rest_error(response: Answer | httpx.Response, status: int, error: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == error, body
    description: str = body["error_description"]
    return description


async def test_empty_brackets_without_a_key_are_never_parsed(stack: Stack) -> None:
    """`a[]&` repeated: quadratic in the old parser (64 KB stalled the gateway for 15 s)."""
    bodies = [b"a[]&" * (64 * 1024 // 4), b"a[]&" * (BODY_LIMIT // 4)]
    attacks = [Hostile("/rest/crm.deal.add", body, FORM) for body in bodies * 2]
    answers, slowest = await healthz_during(stack, attacks)
    for answer in answers:
        rest_error(answer, 401, "NO_AUTH_FOUND")
    assert slowest < HEALTHY, f"/healthz took {slowest * 1000:.0f} ms"


async def test_empty_brackets_with_a_key_stop_at_phps_cap(connected: tuple[Stack, str]) -> None:
    stack, key = connected
    before = (await stack.counters())["rest_calls"]
    in_body = f"auth={key}&".encode() + b"a[]&" * ((BODY_LIMIT - 200) // 4)
    in_header = b"a[]&" * (BODY_LIMIT // 4)
    attacks = [
        Hostile("/rest/crm.deal.add", in_body, FORM),
        Hostile(
            "/rest/crm.deal.add",
            in_header,
            {**FORM, "Authorization": f"Bearer {key}"},
        ),
    ]
    answers, slowest = await healthz_during(stack, attacks)
    for answer in answers:
        assert "1000 parameters" in rest_error(answer, 413, "INVALID_REQUEST")
    assert slowest < HEALTHY, f"/healthz took {slowest * 1000:.0f} ms"
    assert (await stack.counters())["rest_calls"] == before  # nothing reached the portal


async def test_deep_brackets_are_refused(connected: tuple[Stack, str]) -> None:
    stack, key = connected
    deep = "a" + "[b]" * 10_000 + "=1"
    attacks = [
        Hostile("/rest/crm.deal.add", deep.encode(), FORM),
        Hostile("/rest/crm.deal.add", f"auth={key}&{deep}".encode(), FORM),
        Hostile(
            f"/rest/crm.deal.list?{deep}", headers={"Authorization": f"Bearer {key}"}, method="GET"
        ),
    ]
    answers, slowest = await healthz_during(stack, attacks)
    rest_error(answers[0], 401, "NO_AUTH_FOUND")
    for answer in answers[1:]:
        assert "deeper than 64 levels" in rest_error(answer, 400, "INVALID_REQUEST")
    assert slowest < HEALTHY, f"/healthz took {slowest * 1000:.0f} ms"


def nested_json(depth: int, auth: str | None = None) -> bytes:
    head = b'{"auth": "' + auth.encode() + b'", ' if auth else b"{"
    return head + b'"a": ' + b"[" * depth + b"]" * depth + b"}"


async def test_deep_json_is_refused_on_every_surface(connected: tuple[Stack, str]) -> None:
    stack, key = connected
    bearer = {**JSON, "Authorization": f"Bearer {key}"}
    deep = b"[" * 10_000 + b"]" * 10_000
    attacks = [
        Hostile("/rest/crm.deal.add", nested_json(10_000), JSON),
        Hostile("/rest/crm.deal.add", nested_json(10_000, key), JSON),
        Hostile("/rest/crm.deal.add", nested_json(100, key), JSON),
        Hostile("/rest/crm.deal.add", nested_json(100), bearer),
        Hostile(
            "/api/v1/call",
            b'{"method": "crm.deal.add", "params": ' + deep + b"}",
            bearer,
        ),
        Hostile(
            "/api/v1/call",
            b'{"method": "crm.deal.add", "params": {"a": ' + b"[" * 100 + b"]" * 100 + b"}}",
            bearer,
        ),
        Hostile(
            "/api/v1/batch",
            b'{"commands": [{"method": "crm.deal.add", "params": {"a": '
            + b"[" * 100
            + b"]" * 100
            + b"}}]}",
            bearer,
        ),
        Hostile(
            "/api/v1/list",
            b'{"method": "crm.deal.list", "params": {"filter": ' + b"[" * 100 + b"]" * 100 + b"}}",
            bearer,
        ),
    ]
    answers, slowest = await healthz_during(stack, attacks)
    rest_error(answers[0], 401, "NO_AUTH_FOUND")
    assert "JSON" in rest_error(answers[1], 400, "INVALID_REQUEST")
    for answer in answers[2:4]:
        assert "deeper than 64 levels" in rest_error(answer, 400, "INVALID_REQUEST")
    codes = [answer.json()["code"] for answer in answers[4:]]
    assert [answer.status_code for answer in answers[4:]] == [400] * 4
    assert codes == ["invalid_json", "too_deep", "too_deep", "too_deep"]
    assert slowest < HEALTHY, f"/healthz took {slowest * 1000:.0f} ms"
    assert (await stack.counters())["rest_calls"] == 0


async def test_a_costly_value_from_a_client_never_holds_the_event_loop(
    connected: tuple[Stack, str],
) -> None:
    """One value of 2.8 million percent escapes, within every cap: seconds of decoding for
    Python's own unquote. It is the client's own work, not every other client's wait."""
    stack, key = connected
    escapes = f"auth={key}&fields[COMMENTS]=" + "%41" * ((BODY_LIMIT - 200) // 3)
    # `%4` is no escape: each is written back as it is, the decoder's slowest case.
    lone = f"auth={key}&fields[COMMENTS]=" + "%4" * ((BODY_LIMIT - 200) // 2)
    attacks = [Hostile("/rest/no..such", body.encode(), FORM) for body in (escapes, lone)]
    answers, slowest = await healthz_during(stack, attacks)
    for answer in answers:  # parsed, then refused by the method's name
        rest_error(answer, 404, "ERROR_METHOD_NOT_FOUND")
    assert slowest < HEALTHY, f"/healthz took {slowest * 1000:.0f} ms"


async def test_phps_caps_themselves_still_pass(connected: tuple[Stack, str]) -> None:
    """What PHP accepts the gateway forwards: 1,000 parameters, 64 levels of brackets."""
    stack, key = connected
    names = "&".join(f"fields[UF_{i}]=x" for i in range(998))
    wide = await stack.http.post(
        "/rest/crm.deal.add",
        content=f"auth={key}&fields[TITLE]=wide&{names}".encode(),
        headers=FORM,
    )
    assert wide.status_code == 200, wide.text
    deep = "fields[TITLE]=deep&fields[X]" + "[a]" * 62 + "=1"  # 64 brackets
    nested = await stack.http.post(
        "/rest/crm.deal.add", content=f"auth={key}&{deep}".encode(), headers=FORM
    )
    assert nested.status_code == 200, nested.text
    level: Any = 1
    for _ in range(63):
        level = {"a": level}
    as_json = await stack.http.post(
        "/rest/crm.deal.add", json={"auth": key, "fields": {"TITLE": "json", "X": level}}
    )
    assert as_json.status_code == 200, as_json.text
