"""Schemathesis over the gateway's own OpenAPI description: every operation of
``/api/v1/*`` and of the Bitrix24-shaped ``/rest/`` surface, fed generated and mutated
requests (positive and negative) by an anonymous caller and by a caller holding a valid
key. Whatever arrives, the gateway answers without a server error, in the statuses,
content types and shapes it describes.

The gateway runs on a loopback port in front of a sandbox, on an event loop of its own
thread (schemathesis' requests are synchronous). A guard refuses every connection outside
127.0.0.0/8 while the module runs, so nothing generated leaves the machine. The run is
deterministic (a fixed seed, ``derandomize``) and bounded: a fixed number of examples for
each operation, well under a minute on two cores.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import schemathesis
from hypothesis import settings
from schemathesis import Case
from schemathesis.config import SchemathesisConfig

from b24gate.api import create_app
from b24gate.core import Gateway, new_key
from b24gate.sandbox import Clock, SandboxConfig, SandboxServer
from b24gate.settings import load_settings
from b24gate.store import NewEvent
from b24gate.testing import free_port
from tests.api.conftest import CLIENT_SECRET, Stack, gateway_settings, serve_gateway

T = TypeVar("T")

# Generated cases per operation and caller: 11 operations x 2 callers x this, plus the
# examples and the coverage phase's cases, is what bounds the module's time.
MAX_EXAMPLES = 25
# A run that takes longer than this has a stalled request, not a slow machine.
MODULE_BUDGET_S = 120.0
# The operations under test; /healthz, /readyz and /metrics take no input.
SURFACES = r"^/(api/v1|rest|portals)/"
PORTAL = "demo"

CONFIG: dict[str, Any] = {
    "seed": 20261210,
    "generation": {
        "mode": "all",
        "max-examples": MAX_EXAMPLES,
        "deterministic": True,
        "database": "none",  # no example store: every run is the same run
    },
    "phases": {
        "examples": {"enabled": True},
        "coverage": {"enabled": True},
        "fuzzing": {"enabled": True},
        "stateful": {"enabled": False},
    },
    "checks": {
        "enabled": False,
        "not_a_server_error": {"enabled": True},
        "status_code_conformance": {"enabled": True},
        "content_type_conformance": {"enabled": True},
        "response_schema_conformance": {"enabled": True},
        # Seconds; the sandbox answers in milliseconds, so a slower answer is a stalled
        # gateway (a hostile body parsed on the event loop), not a busy machine.
        "max_response_time": 5.0,
    },
    # A stalled answer fails the case instead of stalling the run.
    "request-timeout": 10,
}


@dataclass
class Live:
    """The gateway and its sandbox, served from a thread; ``run`` schedules onto its loop."""

    loop: asyncio.AbstractEventLoop
    stack: Stack | None = None
    key: str = ""  # a client allowed on `demo`, every method, its key allowed in the URL
    cleanups: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    # (operation, with the key) -> how often each status was answered
    statuses: defaultdict[tuple[str, bool], Counter[int]] = field(
        default_factory=lambda: defaultdict(Counter)
    )

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @property
    def base_url(self) -> str:
        assert self.stack is not None
        return self.stack.base_url


async def _start(live: Live, data_dir: Path) -> None:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    sandbox = SandboxServer(
        SandboxConfig(
            client_secret=CLIENT_SECRET,
            redirect_uri=f"{base_url}/oauth/callback",
            auto_approve=True,
            rate=0,
        ),
        Clock(),
    )
    await sandbox.start()
    live.cleanups.append(sandbox.stop)
    settings_ = gateway_settings(data_dir, port)
    gateway = await Gateway.open(settings_)
    live.cleanups.append(gateway.close)
    server, task = await serve_gateway(settings_, gateway, port)

    async def stop_server() -> None:
        server.should_exit = True
        await task

    live.cleanups.append(stop_server)
    http = httpx.AsyncClient(base_url=base_url, timeout=30)
    control = httpx.AsyncClient(base_url=sandbox.base_url, timeout=30)
    live.cleanups.extend([http.aclose, control.aclose])
    stack = Stack(sandbox, gateway, settings_, base_url, http, control)
    # A budget far above what the run uses: the scheduler still carries each call, without
    # pacing the run to Bitrix24's 2 requests a second.
    await stack.add_portal(PORTAL, rate=1000.0, burst=1000)
    page = await stack.connect(PORTAL)
    assert page.status_code == 200, page.text
    key = new_key()
    await gateway.store.add_client(
        "fuzz", key.key_id, key.key_hash, [PORTAL], [], [], allow_url_key=True, events=["*"]
    )
    # Events in the log, so that a fuzzed long poll (`wait` up to 60 s) finds some at once
    # for every cursor but the last.
    portal = await gateway.store.portal(PORTAL)
    assert portal is not None
    update = NewEvent("ONCRMDEALUPDATE", {"FIELDS": {"ID": "1"}}, None, "online")
    await gateway.store.events.append(portal.id, [update] * 1000, time.time())
    live.stack, live.key = stack, key.key


async def _stop(live: Live) -> None:
    for cleanup in reversed(live.cleanups):
        await cleanup()


@dataclass
class LoopbackGuard:
    """Refuses, and remembers, any connection to an address outside the loopback range."""

    refused: list[str] = field(default_factory=list)

    def allows(self, address: Any) -> bool:
        host = address[0] if isinstance(address, tuple) else None
        try:
            return host is not None and ipaddress.ip_address(host).is_loopback
        except ValueError:  # a name: only `localhost` resolves to loopback for sure
            return host == "localhost"


@pytest.fixture(scope="module")
def loopback_only() -> Iterator[LoopbackGuard]:
    guard = LoopbackGuard()
    connect = socket.socket.connect
    connect_ex = socket.socket.connect_ex

    def checked(address: Any) -> None:
        if not guard.allows(address):
            guard.refused.append(repr(address))
            raise ConnectionRefusedError(f"the fuzz run may reach loopback only, not {address!r}")

    def guarded_connect(self: socket.socket, address: Any) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            checked(address)
        connect(self, address)

    def guarded_connect_ex(self: socket.socket, address: Any) -> int:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            checked(address)
        return connect_ex(self, address)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", guarded_connect)
        patch.setattr(socket.socket, "connect_ex", guarded_connect_ex)
        yield guard
    assert guard.refused == [], f"connections outside loopback were attempted: {guard.refused}"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, loopback_only: LoopbackGuard) -> Iterator[Live]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fuzz-gateway", daemon=True)
    thread.start()
    live = Live(loop)
    try:
        live.run(_start(live, tmp_path_factory.mktemp("fuzz")))
        yield live
    finally:
        live.run(_stop(live))
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
    assert time.monotonic() - live.started < MODULE_BUDGET_S


def _description() -> dict[str, Any]:
    """The description the gateway serves at /openapi.json (built from the app alone: no
    gateway is opened for it). Loaded at import, as pytest parametrizes at collection."""
    settings_ = load_settings(data_dir=Path("unused"), public_url="http://127.0.0.1")
    description: dict[str, Any] = create_app(settings_).app.openapi()
    return description


DESCRIPTION = _description()
schema = schemathesis.openapi.from_dict(
    DESCRIPTION, config=SchemathesisConfig.from_dict(CONFIG)
).include(path_regex=SURFACES)


# No per-example deadline: each answer's time is checked by `max_response_time` above.
fuzz_settings = settings(max_examples=MAX_EXAMPLES, derandomize=True, deadline=None, database=None)


def _as_key_holder(case: Case[Any], key: str) -> None:
    """Put the valid key wherever this case carries a credential, and aim at the key's
    portal, so that the request gets past admission and reaches the sandbox."""
    case.headers["Authorization"] = f"Bearer {key}"
    if case.query and "auth" in case.query:
        case.query["auth"] = key
    if isinstance(case.body, dict):
        if "auth" in case.body:
            case.body["auth"] = key
        if case.operation.path.startswith("/api/v1/"):
            case.body.pop("domain", None)
            case.body["portal"] = PORTAL
    if case.path_parameters:
        if "key" in case.path_parameters:
            case.path_parameters["key"] = key
        if "name" in case.path_parameters:
            case.path_parameters["name"] = PORTAL


@schema.parametrize()
@fuzz_settings
def test_no_server_error_for_an_anonymous_caller(case: Case[Any], live: Live) -> None:
    """Whatever an unauthenticated caller sends, it gets a described 4xx, never a 500."""
    response = case.call_and_validate(base_url=live.base_url)
    live.statuses[case.operation.label, False][response.status_code] += 1


@schema.parametrize()
@fuzz_settings
def test_no_server_error_for_a_key_holder(case: Case[Any], live: Live) -> None:
    """With a valid key the same inputs reach the parsers, admission and the sandbox."""
    _as_key_holder(case, live.key)
    response = case.call_and_validate(base_url=live.base_url)
    live.statuses[case.operation.label, True][response.status_code] += 1


def test_the_guard_lets_only_loopback_through(loopback_only: LoopbackGuard) -> None:
    # Checked without a connection: a guard that failed here would let one leave.
    for address in (("127.0.0.1", 80), ("127.8.9.10", 80), ("::1", 80, 0, 0), ("localhost", 80)):
        assert loopback_only.allows(address), address
    for address in (("192.0.2.1", 80), ("10.0.0.1", 80), ("2001:db8::1", 80, 0, 0), ("a.b", 80)):
        assert not loopback_only.allows(address), address
    assert socket.socket.connect.__name__ == "guarded_connect"


def test_the_fuzzed_description_is_the_one_served(live: Live) -> None:
    served = httpx.get(f"{live.base_url}/openapi.json", timeout=10)
    assert served.status_code == 200
    assert served.json() == DESCRIPTION


def test_the_key_holder_got_past_admission(live: Live) -> None:
    """The keyed run is worth its time only if its calls ran: every operation had answers
    from the sandbox, and the anonymous run had none (it runs first, on the same stack)."""
    keyed = {op for op, with_key in live.statuses if with_key}
    if not keyed:
        pytest.skip("the key holder's run was not selected")
    for (op, with_key), statuses in sorted(live.statuses.items()):
        # A job's id is 32 random hex digits: the fuzzer's are never a job, and 404
        # `unknown_job` (given only once the key is accepted) is how far it gets.
        through = (200, 202, 404) if "{job_id}" in op else (200, 202)
        passed = sum(statuses[status] for status in through)
        if with_key:
            assert passed > 0, f"{op}: no call got through: {dict(statuses)}"
        else:
            assert passed == 0, f"{op}: anonymous calls got through: {dict(statuses)}"
