"""Throughput under Bitrix24's limits: the gateway's scheduler against the theoretical maximum.

One run starts the sandbox (``b24gate sandbox --rate 2 --burst 10``: a small bucket, so that
the steady state dominates) and the gateway (``b24gate serve`` with a temporary data
directory) each in its own process, pinned to cores 0 and 1 where ``taskset`` exists,
registers the portal with the same budget (``b24gate portal add … --rate 2 --burst 10``),
connects it and adds two clients, as an administrator does. Then, from this process
(aiohttp; fast_bitrix24 in a thread of its own), with the sandbox's bucket emptied
(``POST /_sandbox/limits {"reset": true}``) and left to drain before each load:

(c) export: 100,000 deals (seeded by ``POST /_sandbox/seed``) through ``POST /api/v1/list``,
    the NDJSON stream read and counted (every record a line, then ``{"count": N}``);
(a) the gateway: 2,000 independent ``crm.deal.add`` calls by 100 concurrent callers through
    ``POST /api/v1/call``; a caller that gets 503 or 429 waits ``Retry-After`` (at most 5 s)
    and sends the call again, and each such answer is counted;
(d) meanwhile, a second client (its own key) sends a single ``profile`` call every 1.5 s,
    6 at most: its latency is the wait a small client sees behind a bulk import;
(b) fast_bitrix24: the same 2,000 adds by ``Bitrix(webhook).call("crm.deal.add", [...])``
    (its best case: the whole list in one call, packed in batches of 50 by the library) to
    a sandbox incoming webhook, directly. The library is told the real budget
    (``request_pool_size=10, requests_per_second=2``) and sends one request at a time
    (``slow(1)``): its throttle counts a request only once answered, so with its default
    concurrency it fires all 40 batches at once, gets 503 for 30 of them and gives up after
    10 failures in a row. It has no target; it is the yardstick, and if it fails the table
    says so without changing the exit status.

For each load the table shows the theoretical time ``max(0, R - burst) / rate`` of the R
requests it needs (50 calls, or 50 list pages, per request), the achieved time and their
ratio, and what the sandbox saw (``GET /_sandbox/counters`` before and after): requests,
calls per executed request, requests it refused with 503 ``QUERY_LIMIT_EXCEEDED``.

Targets: (a) and (c) ratio >= 0.9; (a) 0 requests refused by the sandbox and 0 answers 503
or 429 reaching a caller; (d) every sample under two drain intervals (2 / rate = 1 s).
Exit status: 0 every target met; 1 the run completed but a target was missed; 2 something
could not be measured (the gateway has no per-portal ``--rate/--burst`` yet: then only (b)
runs; ``/api/v1/list`` is missing; a call failed; or ``--time-limit`` passed): the output
says which. Every process it started and every temporary directory is removed in all cases.

    python bench/limits.py [--time-limit 480] [--gateway-log FILE]

``--gateway-log`` keeps the gateway's log, with its one line per request to Bitrix24
(calls carried, longest wait, still queued): where the packing of (a) can be read.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import logging
import math
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _sandbox_proc import (
    STEP_TIMEOUT,
    BenchError,
    TimeLimit,
    add_client,
    bound_run,
    clean_env,
    connect_portal,
    control,
    free_port,
    gateway_has_limits,
    gateway_process,
    sandbox_process,
    tail,
)

RATE = 2.0  # the sandbox's drain, requests/s
BURST = 10  # the sandbox's bucket
PER_REQUEST = 50  # calls per batch, rows per list page
CALLS = 2_000  # (a) and (b)
CALLERS = 100  # (a)
DEALS = 100_000  # (c)
PROBES = 6  # (d)
PROBE_START = 2.0  # seconds into (a) before the first probe
PROBE_EVERY = 1.5
SETTLE = BURST / RATE + 1.0  # an empty bucket on both sides before each load

TARGET_RATIO = 0.9
TARGET_WAIT = 2 / RATE  # two drain intervals

PORTAL = "bench"
SCOPE = "crm,catalog,user"
CALL_TIMEOUT = aiohttp.ClientTimeout(total=150, connect=5)  # a call may wait in the queue
EXPORT_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=5, sock_read=120)
MAX_RETRY_AFTER = 5.0
MAX_ATTEMPTS = 30  # one call refused this often: the run is broken, not slow

T = TypeVar("T")


@dataclass
class Load:
    """One measured load and how the sandbox saw it."""

    carried: str  # what the load carried, for the table
    calls: int  # what one request packs 50 of: calls, or list pages
    seconds: float
    requests: int  # requests the sandbox received
    rejected: int  # of which refused with 503 QUERY_LIMIT_EXCEEDED
    to_callers: int | None  # 503/429 answers that reached a caller (None: not applicable)

    @property
    def needed(self) -> int:
        """R: the requests this load needs at full packing."""
        return math.ceil(self.calls / PER_REQUEST)

    @property
    def theory(self) -> float:
        return max(0, self.needed - BURST) / RATE

    @property
    def ratio(self) -> float:
        return self.theory / self.seconds if self.seconds > 0 else math.inf

    @property
    def calls_per_request(self) -> float:
        executed = self.requests - self.rejected
        return self.calls / executed if executed else 0.0


@dataclass
class Results:
    loads: dict[str, Load | str] = field(default_factory=dict)  # a reason when not measured
    probes: list[float] | str = "not measured"


# -- readiness --------------------------------------------------------------------------


async def has_list_endpoint(session: aiohttp.ClientSession, gateway: str, key: str) -> bool:
    """Whether the gateway serves ``POST /api/v1/list`` (an empty body gets its own error)."""
    status, body, _ = await post(session, f"{gateway}/api/v1/list", b"{}", auth(key))
    return not (status in (404, 405) and b'"success"' not in body)


# -- helpers ----------------------------------------------------------------------------


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}


def deal(tag: str, i: int) -> dict[str, Any]:
    """``crm.deal.add`` parameters that survive batch's query-string encoding (packable)."""
    return {"fields": {"TITLE": f"limits {tag} {i}", "OPPORTUNITY": 1000 + i, "CURRENCY_ID": "RUB"}}


def counters(sandbox: str) -> tuple[int, int]:
    """The sandbox's REST requests so far, and how many it refused with 503."""
    seen = control(sandbox, "counters")
    return int(seen["rest_calls"]), int(seen["rejected_503"])


async def settle(sandbox: str) -> None:
    """Empty the sandbox's bucket and let the gateway's own budget drain as well."""
    control(sandbox, "limits", {"reset": True})
    await asyncio.sleep(SETTLE)


async def post(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]
) -> tuple[int, bytes, float]:
    """One POST: status, body, and ``Retry-After`` in seconds (1 when absent)."""
    try:
        async with session.post(url, data=body, headers=headers) as answer:
            payload = await answer.read()
            retry_after = answer.headers.get("Retry-After", "1")
            status = answer.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise BenchError(f"POST {url}: {type(exc).__name__}: {exc}") from None
    try:
        wait = float(retry_after)
    except ValueError:
        wait = 1.0
    return status, payload, wait


async def call_until_done(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: dict[str, str],
    refused: Counter[int],
) -> None:
    """One call through the gateway, sent again after each 503/429 as a client would."""
    for _ in range(MAX_ATTEMPTS):
        status, payload, retry_after = await post(session, url, body, headers)
        if status == 200 and b'"success":true' in payload:
            return
        if status in (429, 503):
            refused[status] += 1
            await asyncio.sleep(min(max(retry_after, 0.1), MAX_RETRY_AFTER))
            continue
        raise BenchError(f"a call through the gateway failed: HTTP {status}: {payload[:300]!r}")
    raise BenchError(f"a call through the gateway was refused {MAX_ATTEMPTS} times")


async def in_daemon_thread(work: Callable[[], T]) -> T:
    """Run blocking ``work`` in a daemon thread: one stuck past the time limit cannot keep
    this process alive."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle_future(ok: bool, value: Any) -> None:
        if not future.done():
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

    def run() -> None:
        try:
            outcome: tuple[bool, Any] = (True, work())
        except BaseException as exc:  # handed over to the awaiting coroutine
            outcome = (False, exc)
        with suppress(RuntimeError):  # the loop is gone: the run ended without us
            loop.call_soon_threadsafe(settle_future, *outcome)

    threading.Thread(target=run, name="fast_bitrix24", daemon=True).start()
    return await future


# -- the loads --------------------------------------------------------------------------


def record_id(line: bytes) -> Any:
    """The ``ID`` of one exported record (None if it has none)."""
    try:
        record = json.loads(line)
    except ValueError:
        record = None
    if not isinstance(record, dict):
        raise BenchError(f"the export streamed a line that is not a record: {line[:300]!r}")
    return record.get("ID")


async def export(session: aiohttp.ClientSession, gateway: str, key: str, sandbox: str) -> Load:
    """(c): every deal through ``/api/v1/list``, read as a stream and counted."""
    total = int(control(sandbox, "seed", {"entity": "crm.deal", "count": DEALS})["count"])
    await settle(sandbox)
    body = json.dumps({"portal": PORTAL, "method": "crm.deal.list", "params": {}}).encode()
    requests_before, rejected_before = counters(sandbox)
    records = 0
    ids: set[Any] = set()
    pending: bytes | None = None  # the newest line: a record, unless it is the last one
    buffer = b""
    started = time.perf_counter()
    try:
        async with session.post(
            f"{gateway}/api/v1/list", data=body, headers=auth(key), timeout=EXPORT_TIMEOUT
        ) as answer:
            if answer.status != 200:
                text = (await answer.read())[:300]
                raise BenchError(f"/api/v1/list answered HTTP {answer.status}: {text!r}")
            async for chunk in answer.content.iter_any():
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if not line.strip():
                        continue
                    if pending is not None:
                        records += 1
                        ids.add(record_id(pending))
                    pending = line
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise BenchError(f"/api/v1/list: {type(exc).__name__}: {exc}") from None
    seconds = time.perf_counter() - started
    if buffer.strip():  # no newline after the last line
        if pending is not None:
            records += 1
            ids.add(record_id(pending))
        pending = buffer
    try:
        last = json.loads(pending) if pending is not None else None
    except ValueError:
        last = None
    if not isinstance(last, dict) or "count" not in last:
        raise BenchError(f"the export did not end with a count line: {(pending or b'')[:300]!r}")
    if last["count"] != records or records != total:
        raise BenchError(
            f"the export streamed {records:,} records and said count={last['count']}, "
            f"the sandbox holds {total:,}"
        )
    if None not in ids and len(ids) != records:
        raise BenchError(f"the export repeated records: {len(ids):,} distinct IDs in {records:,}")
    requests_after, rejected_after = counters(sandbox)
    return Load(
        f"{records:,} deals",
        math.ceil(records / PER_REQUEST),
        seconds,
        requests_after - requests_before,
        rejected_after - rejected_before,
        0,
    )


async def probe(
    session: aiohttp.ClientSession,
    url: str,
    key: str,
    finished: asyncio.Event,
    refused: Counter[int],
) -> list[float]:
    """(d): single ``profile`` calls by a second client while (a) runs; their latencies."""
    body = json.dumps({"portal": PORTAL, "method": "profile", "params": {}}).encode()
    samples: list[float] = []

    async def pause(seconds: float) -> None:
        with suppress(TimeoutError):
            await asyncio.wait_for(finished.wait(), seconds)

    await pause(PROBE_START)
    while not finished.is_set() and len(samples) < PROBES:
        started = time.perf_counter()
        status, payload, _ = await post(session, url, body, auth(key))
        if status in (429, 503):
            refused[status] += 1
        elif status != 200 or b'"success":true' not in payload:
            raise BenchError(f"the second client's call failed: HTTP {status}: {payload[:300]!r}")
        else:
            samples.append(time.perf_counter() - started)
        await pause(PROBE_EVERY)
    return samples


async def gateway_adds(
    session: aiohttp.ClientSession, gateway: str, key: str, probe_key: str, sandbox: str
) -> tuple[Load, list[float]]:
    """(a) with (d) alongside."""
    url = f"{gateway}/api/v1/call"
    headers = auth(key)
    bodies = [
        json.dumps({"portal": PORTAL, "method": "crm.deal.add", "params": deal("a", i)}).encode()
        for i in range(CALLS)
    ]
    refused: Counter[int] = Counter()
    finished = asyncio.Event()
    queue = iter(bodies)

    async def caller() -> None:
        for body in queue:  # the callers share one iterator: each call is taken once
            await call_until_done(session, url, body, headers, refused)

    requests_before, rejected_before = counters(sandbox)
    started = time.perf_counter()
    prober = asyncio.create_task(probe(session, url, probe_key, finished, refused))
    callers = [asyncio.create_task(caller()) for _ in range(CALLERS)]
    try:
        await asyncio.gather(*callers)
    except BaseException:
        # One caller failed: stop the others, so that nothing of (a) runs into (b).
        for task in [*callers, prober]:
            task.cancel()
        await asyncio.gather(*callers, prober, return_exceptions=True)
        raise
    seconds = time.perf_counter() - started
    finished.set()
    samples = await prober
    requests_after, rejected_after = counters(sandbox)
    load = Load(
        f"{CALLS:,} adds",
        CALLS,
        seconds,
        requests_after - requests_before,
        rejected_after - rejected_before,
        sum(refused.values()),
    )
    return load, samples


def fast_bitrix24_version() -> str:
    try:
        return importlib.metadata.version("fast_bitrix24")
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


def fast_bitrix24_run(webhook: str, items: list[dict[str, Any]]) -> float:
    """(b), blocking: fast_bitrix24's own loop in this thread; the seconds it took."""
    from fast_bitrix24 import Bitrix

    client = Bitrix(webhook, verbose=False, request_pool_size=BURST, requests_per_second=RATE)
    started = time.perf_counter()
    # One request at a time: its throttle counts a request only once answered, so with its
    # default concurrency (50) it fires every batch at once and gives up on the 503s.
    with client.slow(1):
        results = client.call("crm.deal.add", items)
    seconds = time.perf_counter() - started
    if len(results) != len(items) or not all(results):
        raise BenchError(f"fast_bitrix24 returned {len(results)} results for {len(items)} adds")
    return seconds


async def fast_bitrix24_adds(sandbox: str) -> Load:
    webhook: str = control(sandbox, "webhooks", {"scope": SCOPE})["url"]
    items = [deal("b", i) for i in range(CALLS)]
    requests_before, rejected_before = counters(sandbox)
    try:
        seconds = await in_daemon_thread(lambda: fast_bitrix24_run(webhook, items))
    except BenchError:
        raise
    except Exception as exc:
        raise BenchError(f"fast_bitrix24 failed: {type(exc).__name__}: {exc}") from None
    requests_after, rejected_after = counters(sandbox)
    return Load(
        f"{CALLS:,} adds",
        CALLS,
        seconds,
        requests_after - requests_before,
        rejected_after - rejected_before,
        None,
    )


# -- the run ----------------------------------------------------------------------------


async def warm(session: aiohttp.ClientSession, gateway: str) -> None:
    """Open every caller's connection (uvicorn closes idle ones after 5 s, so just before)."""

    async def one() -> None:
        async with session.get(f"{gateway}/healthz") as answer:
            await answer.read()

    try:
        await asyncio.gather(*(one() for _ in range(CALLERS)))
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise BenchError(f"GET /healthz: {type(exc).__name__}: {exc}") from None


async def measure(
    sandbox: str,
    gateway: str | None,
    keys: tuple[str, str],
    res: Results,
    log_tail: Callable[[], str],
) -> None:
    """Every load in turn; a load that fails is recorded as not measured, the rest go on."""
    key, probe_key = keys
    connector = aiohttp.TCPConnector(limit=CALLERS + 10)
    async with aiohttp.ClientSession(connector=connector, timeout=CALL_TIMEOUT) as session:
        if gateway is not None:
            # Warm-up: each client once, so that no first-call cost lands in a measurement.
            body = json.dumps({"portal": PORTAL, "method": "profile"}).encode()
            for who in keys:
                await call_until_done(session, f"{gateway}/api/v1/call", body, auth(who), Counter())
            if await has_list_endpoint(session, gateway, key):
                try:
                    await settle(sandbox)
                    res.loads["c"] = await export(session, gateway, key, sandbox)
                except TimeLimit:
                    raise
                except BenchError as exc:
                    res.loads["c"] = f"{exc} (gateway log: {log_tail()})"
            else:
                res.loads["c"] = "the gateway has no /api/v1/list yet (HTTP 404)"
            try:
                await settle(sandbox)
                await warm(session, gateway)
                res.loads["a"], res.probes = await gateway_adds(
                    session, gateway, key, probe_key, sandbox
                )
            except TimeLimit:
                raise
            except BenchError as exc:
                res.loads["a"] = res.probes = f"{exc} (gateway log: {log_tail()})"
        try:
            await settle(sandbox)
            res.loads["b"] = await fast_bitrix24_adds(sandbox)
        except TimeLimit:
            raise
        except BenchError as exc:
            res.loads["b"] = str(exc)


def run(args: argparse.Namespace, res: Results) -> None:
    with ExitStack() as stack:
        try:
            setup_and_measure(stack, args, res)
        finally:
            # Disarm before the stack unwinds, so that the alarm cannot cut a clean-up short.
            signal.alarm(0)


def setup_and_measure(stack: ExitStack, args: argparse.Namespace, res: Results) -> None:
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="b24gate-limits-")))
    port = free_port()
    public_url = f"http://127.0.0.1:{port}"
    env = clean_env(tmp / "data", public_url)
    limits_ready = gateway_has_limits(env)
    if not limits_ready:
        # Without a budget the gateway would pass Bitrix24's 503s on and send every call
        # alone: nothing of (a), (c) or (d) would mean anything. fast_bitrix24 still runs.
        reason = "the gateway has no per-portal limits yet (`b24gate portal add` lacks --rate)"
        print(f"limits benchmark: {reason}; measuring fast_bitrix24 only", file=sys.stderr)
        for load in ("c", "a"):
            res.loads[load] = reason
        res.probes = reason
    sandbox, secret = stack.enter_context(
        sandbox_process(
            "--rate", f"{RATE:g}", "--burst", str(BURST), "--scope", SCOPE, core=0,
            redirect_uri=f"{public_url}/oauth/callback", start_timeout=STEP_TIMEOUT,
        )
    )  # fmt: skip
    if not limits_ready:
        asyncio.run(measure(sandbox, None, ("", ""), res, lambda: ""))
        return
    secret_file = tmp / "client-secret"
    secret_file.write_text(secret)
    log_file = args.gateway_log or tmp / "gateway.log"
    stack.enter_context(gateway_process(env, port, log_file))
    budget = ("--rate", f"{RATE:g}", "--burst", str(BURST))
    key = connect_portal(env, sandbox, secret_file, PORTAL, SCOPE, *budget)
    probe_key = add_client(env, "probe", PORTAL)
    try:
        asyncio.run(measure(sandbox, public_url, (key, probe_key), res, lambda: tail(log_file)))
    except BenchError as exc:
        raise BenchError(f"{exc} (gateway log: {tail(log_file)})") from None


# -- report -----------------------------------------------------------------------------


def report(res: Results) -> int:
    print(
        f"b24gate under Bitrix24's limits: the sandbox drains {RATE:g} requests/s from a "
        f"bucket of {BURST}"
    )
    print(
        f"theoretical time = max(0, R - {BURST}) / {RATE:g} s, R = requests needed at "
        f"{PER_REQUEST} calls (or {PER_REQUEST} list pages) each"
    )
    columns = {
        "a": f"(a) gateway, {CALLERS} callers",
        "b": "(b) fast_bitrix24",
        "c": "(c) /api/v1/list export",
    }
    rows: list[tuple[str, Callable[[Load], str]]] = [
        ("load", lambda x: x.carried),
        ("requests needed R", lambda x: f"{x.needed}"),
        ("theoretical time (s)", lambda x: f"{x.theory:.1f}"),
        ("achieved time (s)", lambda x: f"{x.seconds:.1f}"),
        ("ratio theoretical / achieved", lambda x: f"{x.ratio:.2f}"),
        ("requests to Bitrix24", lambda x: f"{x.requests}"),
        ("  beyond R (each costs 1/rate)", lambda x: f"{x.requests - x.rejected - x.needed}"),
        ("calls (pages) per executed request", lambda x: f"{x.calls_per_request:.1f}"),
        ("refused 503 by Bitrix24", lambda x: f"{x.rejected}"),
        ("503/429 reaching a caller", lambda x: "-" if x.to_callers is None else f"{x.to_callers}"),
    ]
    width = 36
    print()
    print(f"{'':<{width}}" + "".join(f"{columns[col]:>26}" for col in "abc"))
    for label, cell in rows:
        line = f"{label:<{width}}"
        for col in "abc":
            load = res.loads.get(col, "not measured")
            line += f"{cell(load) if isinstance(load, Load) else 'n/a':>26}"
        print(line)
    drain = 1 / RATE
    if isinstance(res.probes, list) and res.probes:
        print(
            f"(d) `profile` by a second client during (a): {len(res.probes)} samples, "
            f"median {statistics.median(res.probes):.2f} s, max {max(res.probes):.2f} s; "
            f"drain interval 1/rate = {drain:.2f} s"
        )
    else:
        print(f"(d) `profile` by a second client during (a): n/a; drain interval {drain:.2f} s")
    print(
        f"(b) fast_bitrix24 {fast_bitrix24_version()}: Bitrix(webhook, request_pool_size={BURST}, "
        f"requests_per_second={RATE:g}), slow(1), call(list); it retries its 503s itself"
    )
    for col in "abc":
        why = res.loads.get(col)
        if isinstance(why, str):
            print(f"{columns[col]}: not measured: {why}")
    if isinstance(res.probes, str):
        print(f"(d): not measured: {res.probes}")

    checks: list[tuple[str, str, str, bool | None]] = []
    a, c = res.loads.get("a"), res.loads.get("c")
    if isinstance(a, Load):
        checks += [
            ("(a) ratio", f"{a.ratio:.2f}", f">= {TARGET_RATIO:g}", a.ratio >= TARGET_RATIO),
            ("(a) refused by Bitrix24", f"{a.rejected}", "0", a.rejected == 0),
            ("(a) 503/429 to a caller", f"{a.to_callers}", "0", a.to_callers == 0),
        ]
    else:
        checks += [
            ("(a) ratio", "n/a", f">= {TARGET_RATIO:g}", None),
            ("(a) refused by Bitrix24", "n/a", "0", None),
            ("(a) 503/429 to a caller", "n/a", "0", None),
        ]
    if isinstance(c, Load):
        checks.append(
            ("(c) ratio", f"{c.ratio:.2f}", f">= {TARGET_RATIO:g}", c.ratio >= TARGET_RATIO)
        )
    else:
        checks.append(("(c) ratio", "n/a", f">= {TARGET_RATIO:g}", None))
    if isinstance(res.probes, list) and res.probes:
        worst = max(res.probes)
        checks.append(
            ("(d) max wait", f"{worst:.2f} s", f"< {TARGET_WAIT:.2f} s", worst < TARGET_WAIT)
        )
    else:
        checks.append(("(d) max wait", "n/a", f"< {TARGET_WAIT:.2f} s", None))
    print()
    for what, figure, target, met in checks:
        verdict = "NOT MEASURED" if met is None else "ok" if met else "BELOW TARGET"
        print(f"verdict {what:<26}{figure:>8}  target {target:<10} {verdict}")
    unmeasured = sum(met is None for *_, met in checks)
    missed = sum(met is False for *_, met in checks)
    if unmeasured:
        print(f"overall: COULD NOT MEASURE {unmeasured} target(s); {missed} missed")
        return 2
    print(f"overall: {'every target met' if not missed else f'{missed} target(s) MISSED'}")
    return 0 if not missed else 1


# -- main -------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time-limit", type=int, default=480, help="seconds for the whole run")
    parser.add_argument(
        "--gateway-log",
        type=Path,
        help="keep the gateway's log here (one scheduler line per request to Bitrix24)",
    )
    args = parser.parse_args()
    # fast_bitrix24's tasks left behind by a failure would each print a traceback.
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    bound_run(args.time_limit)
    res = Results()
    try:
        run(args, res)
    except BenchError as exc:
        print(f"limits benchmark: could not measure: {exc}", file=sys.stderr)
        if not res.loads:
            return 2
        report(res)
        return 2
    return report(res)


if __name__ == "__main__":
    sys.exit(main())
