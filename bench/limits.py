"""Throughput under Bitrix24's limits, on an instant and on a slow portal: b24gate and
fast_bitrix24 against the leaky bucket's theoretical time (issue 15's table).

One run starts the sandbox (``b24gate sandbox --rate 2``) and the gateway (``b24gate serve``
with a temporary data directory) each in its own process, pinned to cores 0 and 1 where
``taskset`` exists, registers and connects the portal as an administrator does, and adds
two clients. Then it measures each row below once per latency setting: first with the
sandbox answering at once, then with its latency model adding 2 s to every request (a
batch is one request; ``POST /_sandbox/latency {"request": 2, "command": 0, "page": 0}``).
Before each row the sandbox's bucket is set (``POST /_sandbox/limits``: rate 2/s, the
row's burst, emptied), the gateway is given the same budget (``b24gate portal set --rate
--burst``) and, for a gateway row, left until its own budget has drained.

1. bulk: 3,000 ``crm.deal.add`` handed over at once by one client, bucket 50: b24gate one
   ``POST /api/v1/batch``; fast_bitrix24 ``Bitrix(webhook).call("crm.deal.add", [3000])``
   to a sandbox incoming webhook, with its defaults and with its best settings.
2. export: 100,000 deals through ``POST /api/v1/list`` (the NDJSON stream read, checked
   for the count, for ascending IDs and against the sandbox), bucket 10.
3. export: 25,000 deals, bucket 10: b24gate as in 2; fast_bitrix24 ``get_all``.
4. 3,000 ``crm.deal.add`` from 100 callers with one call outstanding each, through
   ``POST /api/v1/call``, bucket 50; a 503 or 429 is waited out and sent again, and counted.
5. a second client's single ``profile`` call every 1.5 s while b24gate runs 1 and 4.

The exports are of freshly seeded deals (``POST /_sandbox/seed``), selected with
``filter: {">ID": <the last ID before the seed>}``, because earlier rows add deals too.
fast_bitrix24 runs in a child process (this script with ``--fast-bitrix24-job``), so that
its memory is its own and a stuck run can be killed; ``FB_BEST`` says how its best
settings were chosen.

Theory, one formula for every row: the R requests a load needs at full packing (50 commands
or 50 list pages of 50 records each), the burst spent at once and the rest at the drain
rate, plus one request's latency L for the last answer, or, when the callers' own
concurrency is slower, their C calls in turn each taking L:

    theory = max(max(0, R - burst) / rate + L, C * L)

1: R = 60, (60 - 50) / 2 + L = 5.0 s, or 7.0 s with latency. 2: R = 40, 15.0 s or 17.0 s.
3: R = 10, 0.0 s or 2.0 s (the issue says 2.5 s: it counted the 11 requests of the old
export, whose list ends at a page's end and so asks once more; its 100,000 row counted 40,
not 41. R here is what the load needs, so both rows count the same way). 4: R = 60, C = 30,
5.0 s, or 60.0 s with latency (100 calls in flight, 2 s each). 5: the bound for the single
call, two drain intervals plus one request's latency, 1.0 s or 3.0 s. Ratio = theory /
time; 1.0 is the limit.

For rows 1 and 4 of b24gate, the second client's calls of row 5 ride along with the load
and count in R: 3,004 calls need 61 requests, 5.5 s. The bulk target "ahead of
fast_bitrix24" compares ratios (each tool against the theory of the calls it sent), with
the fast_bitrix24 runs that kept to the bucket: a run that got 503s used slots the
portal did not give it.

Each row also shows the requests the sandbox received and those it refused with 503
``QUERY_LIMIT_EXCEEDED`` (``GET /_sandbox/counters`` before and after; a probe of 5 rides
along with 1 and 4), and the peak resident memory during the row: for b24gate the gateway
process's ``VmHWM``, reset through ``/proc/<pid>/clear_refs`` before the row (or, where the
kernel refuses that, ``VmRSS`` sampled every 50 ms); for fast_bitrix24 its child process's
``ru_maxrss``. In brackets, the growth over the row's start.

Targets (b24gate rows): 1 ratio >= 0.9 instant, >= 0.8 with latency, and faster than
fast_bitrix24 (both settings) at the same latency; 2 ratio >= 0.9 / 0.8; 4 ratio >= 0.9 /
0.85 and no 503/429 reaching a caller; 5 every sample within its bound; 0 requests refused
in every b24gate row. fast_bitrix24 rows have none: they are the yardstick, and a failure
is shown as such. A row that passes max(30 s, 3 x theory) is cut and counts as missed (the
gateway is restarted, since a cut batch runs on inside it). Exit status: 0 every target
met; 1 a target missed; 2 a target could not be measured (the sandbox has no latency
model, a call failed, or ``--time-limit`` passed): the output says which. Every process
and temporary directory it started is removed in all cases.

    python bench/limits.py [--only 1,4] [--latency 0,2] [--time-limit 600] [--gateway-log F]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import math
import resource
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable
from contextlib import ExitStack, asynccontextmanager, nullcontext, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _sandbox_proc import (
    STEP_TIMEOUT,
    BenchError,
    TimeLimit,
    add_client,
    b24gate,
    bound_run,
    clean_env,
    connect_portal,
    control,
    free_port,
    gateway_process,
    run_bounded,
    sandbox_process,
    tail,
)

RATE = 2.0  # the sandbox's drain, requests/s, in every row
LATENCY = 2.0  # the slow portal: seconds added to every request
PER_REQUEST = 50  # commands per batch, list pages per batch
PAGE = 50  # records per list page
BULK = 3_000  # rows 1 and 4
BULK_BURST = 50
EXPORT_LARGE = 100_000  # row 2
EXPORT_SMALL = 25_000  # row 3
EXPORT_BURST = 10
CALLERS = 100  # row 4
PROBE_FIRST = 0.5  # seconds into a load before the first probe
PROBE_EVERY = 1.5
ROW_CAP_MIN = 30.0  # a row is cut after max(ROW_CAP_MIN, ROW_CAP_FACTOR * theory)
ROW_CAP_FACTOR = 3.0
RSS_EVERY = 0.05

# (row, latency) -> (Bitrix(...) settings, slow(n) or None): the real budget, and at most
# one request in flight on an instant portal (its throttle counts a request only once
# answered, so more overfill the bucket: on this sandbox defaults, slow(10), slow(25),
# pools of 46 and 40 all took 5.0 s for row 1 with 16-17 refused). On the slow portal its
# defaults stopped after 5 refusals and never finished (150 s); slow(10) is a choice of
# 2 x rate x latency + the margin, not the winner of a sweep.
FB_BEST: dict[tuple[int, float], tuple[dict[str, Any], int | None]] = {
    (1, 0.0): ({"request_pool_size": 50, "requests_per_second": 2.0}, 1),
    (1, LATENCY): ({"request_pool_size": 50, "requests_per_second": 2.0}, 10),
    (3, 0.0): ({"request_pool_size": 10, "requests_per_second": 2.0}, 1),
    (3, LATENCY): ({"request_pool_size": 10, "requests_per_second": 2.0}, 10),
}

PORTAL = "bench"
SCOPE = "crm,catalog,user"
SESSION_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=5, sock_read=120)
MAX_RETRY_AFTER = 5.0
MAX_ATTEMPTS = 30  # one call refused this often: the run is broken, not slow

B24GATE, FB_DEFAULTS, FB_BEST_NAME = "b24gate", "fast_bitrix24 defaults", "fast_bitrix24 best"


@dataclass(frozen=True)
class Row:
    """One line of the table: a load, a latency setting, a tool, and what it should reach."""

    number: int
    load: str
    tool: str
    latency: float
    burst: int
    theory: float
    target: float | None  # the lowest ratio that passes (None: no ratio target)

    @property
    def cap(self) -> float:
        return max(ROW_CAP_MIN, ROW_CAP_FACTOR * self.theory)

    def best(self, got: Outcome) -> float:
        """The theory for the calls the portal carried: the load's, and for rows 1 and 4
        the second client's calls (row 5) that rode along with it."""
        if self.number not in (1, 4) or not got.extra_calls:
            return self.theory
        requests = math.ceil((BULK + got.extra_calls) / PER_REQUEST)
        in_turn = BULK // CALLERS if self.number == 4 else 0
        return theory(requests, self.burst, self.latency, in_turn)


@dataclass
class Outcome:
    """What one row measured."""

    seconds: float
    requests: int = 0  # requests the sandbox received
    refused: int = 0  # of which it refused with 503 QUERY_LIMIT_EXCEEDED
    memory: str = "-"
    cut: bool = False
    to_callers: int = 0  # 503/429 answers that reached a caller
    worst: float = 0.0  # row 5: the slowest sample
    extra_calls: int = 0  # the second client's calls sent during the row (rows 1 and 4)


def theory(requests: int, burst: int, latency: float, in_turn: int = 0) -> float:
    """The module docstring's formula."""
    return max(max(0, requests - burst) / RATE + latency, in_turn * latency)


def rows_of(latency: float) -> list[Row]:
    """Every row at one latency setting, in the order they run (bucket 10 first)."""
    bulk = theory(math.ceil(BULK / PER_REQUEST), BULK_BURST, latency)
    slow = latency > 0
    rows = [
        Row(2, f"export {EXPORT_LARGE:,} deals", B24GATE, latency, EXPORT_BURST,
            theory(math.ceil(EXPORT_LARGE / (PAGE * PER_REQUEST)), EXPORT_BURST, latency),
            0.8 if slow else 0.9),
    ]  # fmt: skip
    small = theory(math.ceil(EXPORT_SMALL / (PAGE * PER_REQUEST)), EXPORT_BURST, latency)
    rows += [
        Row(3, f"export {EXPORT_SMALL:,} deals", tool, latency, EXPORT_BURST, small, None)
        for tool in (B24GATE, FB_DEFAULTS, FB_BEST_NAME)
    ]
    rows += [
        Row(1, f"{BULK:,} adds, one client", B24GATE, latency, BULK_BURST, bulk,
            0.8 if slow else 0.9),
        Row(1, f"{BULK:,} adds, one client", FB_DEFAULTS, latency, BULK_BURST, bulk, None),
        Row(1, f"{BULK:,} adds, one client", FB_BEST_NAME, latency, BULK_BURST, bulk, None),
        Row(4, f"{BULK:,} adds, {CALLERS} callers", B24GATE, latency, BULK_BURST,
            theory(math.ceil(BULK / PER_REQUEST), BULK_BURST, latency, BULK // CALLERS),
            0.85 if slow else 0.9),
        Row(5, "2nd client during 1, 4", B24GATE, latency, BULK_BURST, 2 / RATE + latency,
            None),
    ]  # fmt: skip
    return rows


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


def status_kb(pid: int | str, field_name: str) -> int:
    """One ``kB`` figure of ``/proc/<pid>/status`` (0 where there is none)."""
    with suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field_name}:"):
                return int(line.split()[1])
    return 0


def megabytes(peak_kb: int, base_kb: int) -> str:
    return f"{peak_kb / 1024:.0f} MB (+{max(0, peak_kb - base_kb) / 1024:.0f})"


def reset_peak(pid: int) -> bool:
    """Reset the process's ``VmHWM`` to its current RSS (Linux >= 4.0, same user)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


@asynccontextmanager
async def peak_memory(pid: int, into: list[str]) -> AsyncIterator[None]:
    """Append the process's peak RSS during the block to ``into`` (see the docstring)."""
    base = status_kb(pid, "VmRSS")
    exact = reset_peak(pid)
    sampled = base

    async def sample() -> None:
        nonlocal sampled
        while True:
            sampled = max(sampled, status_kb(pid, "VmRSS"))
            await asyncio.sleep(RSS_EVERY)

    sampler = None if exact else asyncio.create_task(sample())
    try:
        yield
    finally:
        if sampler is not None:
            sampler.cancel()
            with suppress(asyncio.CancelledError):
                await sampler
        into.append(megabytes(status_kb(pid, "VmHWM") if exact else sampled, base))


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


# -- the setup that rows share ----------------------------------------------------------


class Gateway:
    """``b24gate serve`` that can be restarted on the same data directory and port."""

    def __init__(self, env: dict[str, str], port: int, log_file: Path) -> None:
        self.env, self.port, self.log_file = env, port, log_file
        self.url = f"http://127.0.0.1:{port}"
        self.stack = ExitStack()
        self.pid = 0

    def start(self) -> None:
        self.pid = self.stack.enter_context(gateway_process(self.env, self.port, self.log_file))

    def stop(self) -> None:
        self.stack.close()

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self) -> str:
        return tail(self.log_file)


@dataclass
class Bench:
    """What the rows share: the two processes, the keys, and the state of the budgets."""

    sandbox: str
    gateway: Gateway
    key: str
    probe_key: str
    session: aiohttp.ClientSession
    webhook: str
    burst: int = 0  # the budget both sides have now
    idle_at: float = 0.0  # when the gateway's own budget has drained
    samples: list[float] = field(default_factory=list)  # row 5, this latency setting
    probe_calls: int = 0  # the second client's calls so far
    probe_refused: Counter[int] = field(default_factory=Counter)
    children: set[asyncio.subprocess.Process] = field(default_factory=set)

    async def prepare(self, row: Row) -> None:
        """The row's bucket on both sides, emptied; for a gateway row, a drained gateway."""
        if row.burst != self.burst:
            budget = ["--rate", f"{RATE:g}", "--burst", str(row.burst)]
            b24gate(["portal", "set", PORTAL, *budget], self.gateway.env)
            self.burst = row.burst
        control(self.sandbox, "limits", {"rate": RATE, "burst": row.burst, "reset": True})
        if row.tool == B24GATE:
            await asyncio.sleep(max(0.0, self.idle_at - time.monotonic()))

    def finished(self, row: Row) -> None:
        if row.tool == B24GATE:
            self.idle_at = time.monotonic() + row.burst / RATE + row.latency + 1


# -- the loads --------------------------------------------------------------------------


def seed(sandbox: str, count: int) -> int:
    """Seed ``count`` deals; the ``>ID`` that selects exactly them."""
    last = int(control(sandbox, "seed", {"entity": "crm.deal", "count": count})["last_id"])
    return last - count


async def gateway_export(bench: Bench, after: int, expected: int, memory: list[str]) -> None:
    """Rows 2 and 3: the deals after ``after`` through ``/api/v1/list``, checked."""
    params = {"filter": {">ID": after}}
    body = json.dumps({"portal": PORTAL, "method": "crm.deal.list", "params": params}).encode()
    records, last_id, tail_line = 0, after, b""
    buffer = b""
    async with peak_memory(bench.gateway.pid, memory):
        try:
            async with bench.session.post(
                f"{bench.gateway.url}/api/v1/list", data=body, headers=auth(bench.key)
            ) as answer:
                if answer.status != 200:
                    text = (await answer.read())[:300]
                    raise BenchError(f"/api/v1/list answered HTTP {answer.status}: {text!r}")
                async for chunk in answer.content.iter_any():
                    buffer += chunk
                    *lines, buffer = buffer.split(b"\n")
                    for line in filter(None, (x.strip() for x in lines)):
                        if tail_line:
                            last_id = next_id(tail_line, last_id)
                            records += 1
                        tail_line = line
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise BenchError(f"/api/v1/list: {type(exc).__name__}: {exc}") from None
    if buffer.strip():  # no newline after the last line
        if tail_line:
            last_id = next_id(tail_line, last_id)
            records += 1
        tail_line = buffer.strip()
    try:
        end = json.loads(tail_line)
    except ValueError:
        end = None
    if not isinstance(end, dict) or end.get("count") != records or records != expected:
        raise BenchError(
            f"the export streamed {records:,} records, ended with {tail_line[:100]!r}; "
            f"the sandbox holds {expected:,}"
        )


def next_id(line: bytes, previous: int) -> int:
    """The record's ID, which must follow ``previous`` (ascending, no repeats)."""
    try:
        record = json.loads(line)
        current = int(record["ID"])
    except (ValueError, TypeError, KeyError):
        raise BenchError(f"the export streamed a line that is no record: {line[:300]!r}") from None
    if current <= previous:
        raise BenchError(f"the export streamed ID {current} after {previous}")
    return current


async def gateway_bulk(bench: Bench) -> None:
    """Row 1: every add in one ``POST /api/v1/batch``."""
    commands = [{"method": "crm.deal.add", "params": deal("bulk", i)} for i in range(BULK)]
    body = json.dumps({"portal": PORTAL, "commands": commands}).encode()
    status, payload, _ = await post(
        bench.session, f"{bench.gateway.url}/api/v1/batch", body, auth(bench.key)
    )
    if status != 200:
        raise BenchError(f"/api/v1/batch answered HTTP {status}: {payload[:300]!r}")
    results = json.loads(payload).get("results", [])
    failed = [r for r in results if "result" not in r]
    if len(results) != BULK or failed:
        raise BenchError(f"/api/v1/batch: {len(results)} results, {len(failed)} errors: "
                         f"{str(failed[:1])[:300]}")  # fmt: skip


async def gateway_callers(bench: Bench, refused: Counter[int]) -> None:
    """Row 4: the adds by ``CALLERS`` callers, one call outstanding each."""
    url = f"{bench.gateway.url}/api/v1/call"
    headers = auth(bench.key)
    bodies = iter(
        json.dumps({"portal": PORTAL, "method": "crm.deal.add", "params": deal("c", i)}).encode()
        for i in range(BULK)
    )

    async def caller() -> None:
        for body in bodies:  # the callers share one iterator: each call is taken once
            await call_until_done(bench.session, url, body, headers, refused)

    await asyncio.gather(*(caller() for _ in range(CALLERS)))


async def probe(bench: Bench, latency: float) -> None:
    """Row 5: single ``profile`` calls by the second client until cancelled."""
    body = json.dumps({"portal": PORTAL, "method": "profile", "params": {}}).encode()
    url = f"{bench.gateway.url}/api/v1/call"
    await asyncio.sleep(PROBE_FIRST)
    while True:
        started = time.monotonic()
        bench.probe_calls += 1
        status, payload, _ = await post(bench.session, url, body, auth(bench.probe_key))
        if status in (429, 503):
            bench.probe_refused[status] += 1
        elif status != 200 or b'"success":true' not in payload:
            raise BenchError(f"the second client's call failed: HTTP {status}: {payload[:300]!r}")
        else:
            bench.samples.append(time.monotonic() - started)
        await asyncio.sleep(max(0.0, PROBE_EVERY - (time.monotonic() - started)))


async def warm(bench: Bench) -> None:
    """Open every caller's connection (uvicorn closes idle ones after 5 s, so just before)."""

    async def one() -> None:
        async with bench.session.get(f"{bench.gateway.url}/healthz") as answer:
            await answer.read()

    try:
        await asyncio.gather(*(one() for _ in range(CALLERS)))
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise BenchError(f"GET /healthz: {type(exc).__name__}: {exc}") from None


# -- fast_bitrix24, in a child process --------------------------------------------------


def fast_bitrix24_job(job: dict[str, Any]) -> dict[str, Any]:
    """The child's work: one ``call`` or ``get_all``, checked; seconds and memory."""
    from fast_bitrix24 import Bitrix

    client = Bitrix(job["webhook"], verbose=False, **job["settings"])
    items = [deal("fb", i) for i in range(job["count"])] if job["kind"] == "add" else []
    base = status_kb("self", "VmRSS")
    started = time.perf_counter()
    with client.slow(job["slow"]) if job["slow"] else nullcontext():
        if job["kind"] == "add":
            results = client.call("crm.deal.add", items)
        else:
            results = client.get_all("crm.deal.list", {"filter": {">ID": job["after"]}})
    seconds = time.perf_counter() - started
    if job["kind"] == "add":
        ok = len(results) == job["count"] and all(results)
    else:
        ok = len({int(r["ID"]) for r in results}) == len(results) == job["count"]
    if not ok:
        return {"error": f"{len(results)} results for {job['count']}"}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux
    return {"seconds": seconds, "base_kb": base, "peak_kb": peak}


def fast_bitrix24_child() -> int:
    """``--fast-bitrix24-job``: the job on stdin, the outcome as JSON on stdout."""
    try:
        outcome = fast_bitrix24_job(json.load(sys.stdin))
    except Exception as exc:  # the parent shows it in the table
        outcome = {"error": f"{type(exc).__name__}: {exc}"[:300]}
    print(json.dumps(outcome))
    return 0


async def fast_bitrix24(bench: Bench, row: Row, job: dict[str, Any]) -> tuple[float, str]:
    """Run one job in a child process: its seconds and memory, or :class:`BenchError`."""
    if row.tool == FB_BEST_NAME:
        settings, slow = FB_BEST[(row.number, row.latency)]
    else:
        settings, slow = {}, None
    job = {**job, "webhook": bench.webhook, "settings": settings, "slow": slow}
    child = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--fast-bitrix24-job",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    bench.children.add(child)
    try:
        out, _ = await child.communicate(json.dumps(job).encode())
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
        bench.children.discard(child)
    try:
        outcome = json.loads(out)
    except ValueError:
        outcome = {"error": f"no outcome (exit status {child.returncode})"}
    if "error" in outcome:
        raise BenchError(f"fast_bitrix24 failed: {outcome['error']}")
    return float(outcome["seconds"]), megabytes(outcome["peak_kb"], outcome["base_kb"])


def fast_bitrix24_version() -> str:
    try:
        return importlib.metadata.version("fast_bitrix24")
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


# -- one row ----------------------------------------------------------------------------


async def timed(row: Row, work: Awaitable[None]) -> tuple[float, bool]:
    """Seconds ``work`` took, or the row's cap and True when it was cut there."""
    started = time.monotonic()
    try:
        await asyncio.wait_for(work, row.cap)
    except TimeoutError:
        return row.cap, True
    return time.monotonic() - started, False


async def measure_row(bench: Bench, row: Row, after: int) -> Outcome:
    """Run one row (``after``: the export's ``>ID``) and read what the sandbox saw."""
    await bench.prepare(row)
    before = counters(bench.sandbox)
    probes = bench.probe_calls
    memory: list[str] = []
    refused: Counter[int] = Counter()
    seconds, cut = 0.0, False
    try:
        if row.tool != B24GATE:
            kind = "add" if row.number == 1 else "list"
            job = {"kind": kind, "count": BULK if kind == "add" else EXPORT_SMALL, "after": after}
            try:
                seconds, used = await asyncio.wait_for(fast_bitrix24(bench, row, job), row.cap)
            except TimeoutError:
                seconds, cut, used = row.cap, True, "-"
            memory.append(used)
        elif row.number in (2, 3):
            count = EXPORT_LARGE if row.number == 2 else EXPORT_SMALL
            seconds, cut = await timed(row, gateway_export(bench, after, count, memory))
        else:
            if row.number == 4:
                await warm(bench)
            prober = asyncio.create_task(probe(bench, row.latency))
            try:
                async with peak_memory(bench.gateway.pid, memory):
                    load = (
                        gateway_bulk(bench) if row.number == 1 else gateway_callers(bench, refused)
                    )
                    seconds, cut = await timed(row, load)
            finally:
                prober.cancel()
                with suppress(asyncio.CancelledError):
                    await prober
    finally:
        bench.finished(row)
    after_counts = counters(bench.sandbox)
    if cut and row.tool == B24GATE:
        bench.gateway.restart()  # what was cut runs on inside it
    return Outcome(
        seconds,
        after_counts[0] - before[0],
        after_counts[1] - before[1],
        memory[0] if memory else "-",
        cut,
        sum(refused.values()),
        extra_calls=bench.probe_calls - probes,
    )


def probe_outcome(bench: Bench) -> Outcome | str:
    """Row 5 from the samples of rows 1 and 4."""
    if not bench.samples:
        return "no sample: rows 1 and 4 of b24gate did not run"
    return Outcome(
        statistics.median(bench.samples),
        len(bench.samples),
        0,
        to_callers=sum(bench.probe_refused.values()),
        worst=max(bench.samples),
    )


# -- the run ----------------------------------------------------------------------------

Results = dict[Row, Outcome | str]  # a reason when not measured


async def measure_latency(bench: Bench, rows: list[Row], res: Results) -> None:
    """Every selected row at one latency setting; a failed row is recorded, the rest go on."""
    latency = rows[0].latency
    try:
        control(bench.sandbox, "latency", {"request": latency, "command": 0, "page": 0})
    except BenchError as exc:
        if latency > 0:
            for row in rows:
                res[row] = f"the sandbox has no latency model yet ({exc})"
            return
    bench.samples, bench.probe_refused = [], Counter()
    after: dict[int, int] = {}  # an export's >ID, seeded just before its first row
    for row in rows:
        if row.number == 5:
            res[row] = probe_outcome(bench)
            continue
        try:
            if row.number in (2, 3) and row.number not in after:
                count = EXPORT_LARGE if row.number == 2 else EXPORT_SMALL
                after[row.number] = seed(bench.sandbox, count)
            res[row] = await measure_row(bench, row, after.get(row.number, 0))
        except TimeLimit:
            raise
        except BenchError as exc:
            tail_note = f" (gateway log: {bench.gateway.log_tail()})" if row.tool == B24GATE else ""
            res[row] = f"{exc}{tail_note}"


def setup_and_measure(stack: ExitStack, args: argparse.Namespace, res: Results) -> None:
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="b24gate-limits-")))
    port = free_port()
    public_url = f"http://127.0.0.1:{port}"
    env = clean_env(tmp / "data", public_url)
    sandbox, secret = stack.enter_context(
        sandbox_process(
            "--rate", f"{RATE:g}", "--burst", str(BULK_BURST), "--scope", SCOPE, core=0,
            redirect_uri=f"{public_url}/oauth/callback", start_timeout=STEP_TIMEOUT,
        )
    )  # fmt: skip
    secret_file = tmp / "client-secret"
    secret_file.write_text(secret)
    gateway = Gateway(env, port, args.gateway_log or tmp / "gateway.log")
    stack.callback(gateway.stop)
    gateway.start()
    budget = ("--rate", f"{RATE:g}", "--burst", str(BULK_BURST))
    key = connect_portal(env, sandbox, secret_file, PORTAL, SCOPE, *budget)
    probe_key = add_client(env, "probe", PORTAL)
    webhook: str = control(sandbox, "webhooks", {"scope": SCOPE})["url"]
    asyncio.run(measure(args, res, sandbox, gateway, (key, probe_key), webhook))


async def measure(
    args: argparse.Namespace,
    res: Results,
    sandbox: str,
    gateway: Gateway,
    keys: tuple[str, str],
    webhook: str,
) -> None:
    connector = aiohttp.TCPConnector(limit=CALLERS + 10)
    async with aiohttp.ClientSession(connector=connector, timeout=SESSION_TIMEOUT) as session:
        bench = Bench(sandbox, gateway, *keys, session, webhook, burst=BULK_BURST)
        try:
            # Warm-up: each client once, so that no first-call cost lands in a measurement.
            body = json.dumps({"portal": PORTAL, "method": "profile"}).encode()
            for key in keys:
                await call_until_done(session, f"{gateway.url}/api/v1/call", body, auth(key),
                                      Counter())  # fmt: skip
            # The warm-up's requests leave the gateway's budget before the first row.
            bench.idle_at = time.monotonic() + len(keys) / RATE + 1
            for latency in args.latency:
                rows = [r for r in selected(args) if r.latency == latency]
                if rows:
                    await measure_latency(bench, rows, res)
        finally:
            for child in bench.children:
                with suppress(ProcessLookupError):
                    child.kill()


def run(args: argparse.Namespace, res: Results) -> None:
    run_bounded(lambda stack: setup_and_measure(stack, args, res))


# -- report -----------------------------------------------------------------------------


def verdicts(res: Results) -> dict[Row, str]:
    """PASS, MISS (and why), n/a (not measured) or - (no target) for each row."""
    found: dict[Row, str] = {}
    for row, got in res.items():
        if row.tool != B24GATE:
            found[row] = "-"
            continue
        if isinstance(got, str):
            found[row] = "n/a"
            continue
        misses = []
        if row.number == 5:
            if got.worst > row.theory:
                misses.append(f"slowest {got.worst:.2f} s")
        else:
            if got.cut:
                misses.append(f"cut at {row.cap:g} s")
            elif row.target is not None and row.best(got) / got.seconds < row.target:
                misses.append(f"ratio < {row.target:g}")
            if got.refused:
                misses.append(f"{got.refused} refused")
        if got.to_callers:
            misses.append(f"{got.to_callers} 503/429 to callers")
        if row.number == 1:
            # Each against its own theory (the rows carry different calls), and against
            # the runs that kept to the bucket: a run that got 503s took slots it had not.
            rivals = [r.best(o) / o.seconds for r, o in res.items()
                      if r.number == 1 and r.latency == row.latency and r.tool != B24GATE
                      and isinstance(o, Outcome) and not o.cut and not o.refused]  # fmt: skip
            if any(ratio >= row.best(got) / got.seconds for ratio in rivals):
                misses.append("behind fast_bitrix24")
        found[row] = f"MISS: {', '.join(misses)}" if misses else "PASS"
    return found


def line(row: Row, got: Outcome | str, verdict: str) -> str:
    head = f"{row.number}  {row.load:<24} {row.latency:>3g} s  {row.tool:<22}"
    if isinstance(got, str):
        return f"{head} {'-':>9}  {row.theory:>6.1f} {'':>28}  {verdict}"
    if row.number == 5:
        time_cell = f"{got.worst:.2f}"
        ratio = row.theory / got.worst if got.worst else math.inf
        extra = f"median {got.seconds:.2f} s"
    else:
        time_cell = f"{'>' if got.cut else ''}{got.seconds:.1f}"
        ratio = row.best(got) / got.seconds if got.seconds else math.inf
        extra = got.memory
    ratio_cell = "-" if row.theory == 0 else f"{'<' if got.cut else ''}{ratio:.2f}"
    return (
        f"{head} {time_cell:>9}  {row.best(got):>6.1f} {ratio_cell:>5} {got.requests:>5} "
        f"{got.refused:>7} {extra:>14}  {verdict}"
    )


def report(res: Results) -> int:
    print(
        f"b24gate under Bitrix24's limits: sandbox bucket drains {RATE:g} requests/s; "
        "theory = max(max(0, R - burst) / rate + latency, calls per caller x latency)"
    )
    print(
        "memory: b24gate rows the gateway's peak RSS (VmHWM reset per row), fast_bitrix24 "
        f"rows its child process's ru_maxrss; (+growth). fast_bitrix24 {fast_bitrix24_version()}"
    )
    print(
        f"\n#  {'load':<24} lat    {'tool':<22} {'time s':>9}  {'theory':>6} {'ratio':>5} "
        f"{'reqs':>5} {'refused':>7} {'peak memory':>14}  verdict"
    )
    found = verdicts(res)
    for row, got in res.items():
        print(line(row, got, found[row]))
    print(
        "row 5: time = the slowest of the single calls, requests = samples, theory = "
        "its bound (2 / rate + latency), refused = 503/429 it got\n"
        "fast_bitrix24 best: "
        + "; ".join(f"row {n} at {lat:g} s {s}, slow({w})" for (n, lat), (s, w) in FB_BEST.items())
    )
    for row, got in res.items():
        if isinstance(got, str):
            print(f"row {row.number} {row.tool} at {row.latency:g} s: not measured: {got}")
    unmeasured = sum(v == "n/a" for v in found.values())
    missed = sum(v.startswith("MISS") for v in found.values())
    if unmeasured:
        print(f"overall: COULD NOT MEASURE {unmeasured} row(s); {missed} missed")
        return 2
    print(f"overall: {'every target met' if not missed else f'{missed} row(s) MISSED'}")
    return 0 if not missed else 1


# -- main -------------------------------------------------------------------------------


def numbers(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def selected(args: argparse.Namespace) -> list[Row]:
    return [row for lat in args.latency for row in rows_of(lat) if row.number in args.only]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time-limit", type=int, default=600, help="seconds for the whole run")
    parser.add_argument("--only", type=numbers, default=[1, 2, 3, 4, 5],
                        help="rows to run, e.g. 1,5 (5 needs 1 or 4)")  # fmt: skip
    parser.add_argument("--latency", type=numbers, default=[0.0, LATENCY],
                        help=f"latency settings to run, of 0 and {LATENCY:g}")  # fmt: skip
    parser.add_argument(
        "--gateway-log",
        type=Path,
        help="keep the gateway's log here (one scheduler line per request to Bitrix24)",
    )
    parser.add_argument("--fast-bitrix24-job", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fast_bitrix24_job:
        return fast_bitrix24_child()
    if not set(args.latency) <= {0.0, LATENCY}:
        parser.error(f"--latency takes 0 and {LATENCY:g}")
    bound_run(args.time_limit)
    res: Results = dict.fromkeys(selected(args), "not reached: the run stopped before it")
    try:
        run(args, res)
    except BenchError as exc:
        print(f"limits benchmark: could not measure: {exc}", file=sys.stderr)
        report(res)
        return 2
    return report(res)


if __name__ == "__main__":
    sys.exit(main())
