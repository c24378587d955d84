"""What the gateway adds to a call: latency, lost throughput and memory, measured side by side.

One run starts the sandbox (``b24gate sandbox --rate 0``) and the gateway (``b24gate serve``
with a temporary data directory) each in its own process, registers and connects the portal
with the ``b24gate`` commands an administrator uses (``portal add … --rate 0``: no request
budget on the gateway's side either, so its scheduler stays out of the way; ``portal
authorize`` opened by an HTTP client that follows the redirects; ``client add``), and gets
a direct access token from the sandbox for a second app. Then it calls ``profile`` (the cheapest
method, so the gateway's own cost is the largest share) from this process with one aiohttp
session, both ways:

- directly: ``POST <sandbox>/rest/profile.json`` with ``auth`` in the JSON body;
- through the gateway: ``POST /api/v1/call`` with the client key as a Bearer token.

Measured, after a warm-up, with the two ways alternated in ABBA blocks so that machine
noise hits both alike:

1. latency of one sequential client (``--sequential`` calls each way): p50, p99, and the
   latency the gateway adds (gateway minus direct, at p50 and at p99);
2. throughput of ``--concurrency`` concurrent clients for a fixed count (``--calls`` each
   way): calls/s direct, calls/s through the gateway, and their ratio;
3. the gateway's resident memory (VmRSS) after ``--rss-calls`` calls through it, and (for
   information) the gateway's CPU time per call during the throughput rounds.

Pinning (where ``taskset`` exists and there are two cores or more): the sandbox on core 0,
the gateway on core 1; the load generator (this process) is not pinned, so on a 2-core
machine it shares a core with whichever server is less busy. The gateway keeps its
default settings (log level INFO: one log line per call, written to a file).

Targets: added latency p50 <= 1 ms and p99 <= 5 ms, throughput ratio >= 0.5, gateway RSS
< 150 MB. Exit status: 0 every target met; 1 the run completed but a target was missed
(the table says which); 2 the benchmark could not run (a process did not start, a call
failed, or the time limit ``--time-limit``, 300 s by default, passed). Every process it
started and every temporary directory is removed in all three cases.

    python bench/overhead.py [--sequential 2000] [--calls 5000] [--concurrency 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _sandbox_proc import (
    REDIRECT,
    STEP_TIMEOUT,
    BenchError,
    access_token,
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

PORTAL = "bench"
METHOD = "profile"
DIRECT_APP = "local.bench.direct"
SCOPE = "crm,catalog,user"

TARGET_P50_ADDED_MS = 1.0
TARGET_P99_ADDED_MS = 5.0
TARGET_RATIO = 0.5
TARGET_RSS_MB = 150.0

BLOCK = 100  # sequential calls per block; blocks alternate ABBA
ROUNDS = 5  # throughput rounds per way; rounds alternate ABBA
WARMUP_SEQUENTIAL = 200
WARMUP_CONCURRENT = 500
CALL_TIMEOUT = aiohttp.ClientTimeout(total=30, connect=5)


@dataclass(frozen=True)
class Endpoint:
    """One way to call ``profile``: where, with which body and headers, and what success holds."""

    name: str
    url: str
    body: bytes
    headers: dict[str, str]
    marker: bytes


@dataclass
class Figures:
    direct_ms: list[float] = field(default_factory=list)
    gateway_ms: list[float] = field(default_factory=list)
    direct_seconds: float = 0.0
    gateway_seconds: float = 0.0
    direct_calls: int = 0
    gateway_calls: int = 0
    gateway_cpu_seconds: float = 0.0
    gateway_total_calls: int = 0
    rss_start_mb: float = 0.0
    rss_end_mb: float = 0.0
    load_start: float = 0.0
    load_end: float = 0.0


# -- the setup -------------------------------------------------------------------------


def register_direct_app(sandbox: str) -> str:
    """A second app on the sandbox, whose handler is not the gateway; its client secret."""
    answer = control(
        sandbox, "apps", {"client_id": DIRECT_APP, "redirect_uri": REDIRECT, "scope": SCOPE}
    )
    secret: str = answer["client_secret"]
    return secret


# -- /proc ------------------------------------------------------------------------------


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise BenchError("no VmRSS in /proc/<gateway>/status")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- load -------------------------------------------------------------------------------


async def one(session: aiohttp.ClientSession, ep: Endpoint) -> float:
    """One call; its latency in milliseconds, the answer read whole and checked."""
    started = time.perf_counter()
    try:
        async with session.post(ep.url, data=ep.body, headers=ep.headers) as answer:
            body = await answer.read()
            status = answer.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise BenchError(f"{ep.name}: {type(exc).__name__}: {exc}") from None
    elapsed = (time.perf_counter() - started) * 1000
    if status != 200 or ep.marker not in body:
        raise BenchError(f"{ep.name}: HTTP {status}: {body[:300]!r}")
    return elapsed


async def sequential(session: aiohttp.ClientSession, ep: Endpoint, n: int) -> list[float]:
    return [await one(session, ep) for _ in range(n)]


async def concurrent(session: aiohttp.ClientSession, ep: Endpoint, n: int, clients: int) -> float:
    """``n`` calls by ``clients`` concurrent clients; the seconds they took."""
    left = n

    async def client() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await one(session, ep)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return time.perf_counter() - started


def abba(count: int) -> Iterator[bool]:
    """``True`` = direct first: D G G D D G G D …, so neither way always goes first."""
    for i in range(count):
        yield i % 2 == 0


async def measure(
    direct: Endpoint, gateway: Endpoint, gateway_pid: int, args: argparse.Namespace
) -> Figures:
    fig = Figures(rss_start_mb=rss_mb(gateway_pid), load_start=os.getloadavg()[0])
    connector = aiohttp.TCPConnector(limit=4 * args.concurrency, limit_per_host=args.concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=CALL_TIMEOUT) as session:
        # Warm-up: open every connection, let both servers settle.
        for ep in (direct, gateway):
            await sequential(session, ep, WARMUP_SEQUENTIAL)
            await concurrent(session, ep, WARMUP_CONCURRENT, args.concurrency)
        fig.gateway_total_calls += WARMUP_SEQUENTIAL + WARMUP_CONCURRENT

        blocks = max(1, args.sequential // BLOCK)
        for direct_first in abba(blocks):
            for ep in (direct, gateway) if direct_first else (gateway, direct):
                samples = await sequential(session, ep, BLOCK)
                (fig.direct_ms if ep is direct else fig.gateway_ms).extend(samples)
        fig.gateway_total_calls += blocks * BLOCK

        per_round = max(1, args.calls // ROUNDS)
        for direct_first in abba(ROUNDS):
            for ep in (direct, gateway) if direct_first else (gateway, direct):
                cpu_before = cpu_seconds(gateway_pid)
                seconds = await concurrent(session, ep, per_round, args.concurrency)
                if ep is direct:
                    fig.direct_seconds += seconds
                    fig.direct_calls += per_round
                else:
                    fig.gateway_seconds += seconds
                    fig.gateway_calls += per_round
                    fig.gateway_cpu_seconds += cpu_seconds(gateway_pid) - cpu_before
        fig.gateway_total_calls += fig.gateway_calls

        top_up = args.rss_calls - fig.gateway_total_calls
        if top_up > 0:
            await concurrent(session, gateway, top_up, args.concurrency)
            fig.gateway_total_calls += top_up
    fig.rss_end_mb = rss_mb(gateway_pid)
    fig.load_end = os.getloadavg()[0]
    return fig


# -- report -----------------------------------------------------------------------------


def percentile(samples: list[float], q: int) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[q - 1]


def report(fig: Figures, args: argparse.Namespace) -> int:
    d50, d99 = percentile(fig.direct_ms, 50), percentile(fig.direct_ms, 99)
    g50, g99 = percentile(fig.gateway_ms, 50), percentile(fig.gateway_ms, 99)
    add50, add99 = g50 - d50, g99 - d99
    direct_rate = fig.direct_calls / fig.direct_seconds
    gateway_rate = fig.gateway_calls / fig.gateway_seconds
    ratio = gateway_rate / direct_rate
    cpu_ms = fig.gateway_cpu_seconds / fig.gateway_calls * 1000

    print(
        f"b24gate overhead: `{METHOD}`, {len(fig.direct_ms):,} sequential calls and "
        f"{fig.direct_calls:,} calls by {args.concurrency} concurrent clients, each way"
    )
    print(f"{'':<40}{'direct':>10}{'gateway':>10}{'added':>10}")
    print(f"{'latency p50, 1 client (ms)':<40}{d50:>10.2f}{g50:>10.2f}{add50:>10.2f}")
    print(f"{'latency p99, 1 client (ms)':<40}{d99:>10.2f}{g99:>10.2f}{add99:>10.2f}")
    print(
        f"{f'throughput, {args.concurrency} clients (calls/s)':<40}"
        f"{direct_rate:>10,.0f}{gateway_rate:>10,.0f}{f'x{ratio:.2f}':>10}"
    )
    print(
        f"{f'gateway RSS after {fig.gateway_total_calls:,} calls (MB)':<40}"
        f"{'':>10}{fig.rss_end_mb:>10.1f}{f'+{fig.rss_end_mb - fig.rss_start_mb:.1f}':>10}"
    )
    print(f"{'gateway CPU per call (ms, info)':<40}{'':>10}{cpu_ms:>10.2f}")
    print(
        f"{'load average, 1 min (info)':<40}{'start':>10}{fig.load_start:>10.2f}"
        f"  end {fig.load_end:.2f} on {os.cpu_count()} cores"
    )

    checks = [
        ("added latency p50", f"{add50:.2f} ms", f"<= {TARGET_P50_ADDED_MS:g} ms",
         add50 <= TARGET_P50_ADDED_MS),
        ("added latency p99", f"{add99:.2f} ms", f"<= {TARGET_P99_ADDED_MS:g} ms",
         add99 <= TARGET_P99_ADDED_MS),
        ("throughput ratio", f"{ratio:.2f}", f">= {TARGET_RATIO:g}", ratio >= TARGET_RATIO),
        ("gateway RSS", f"{fig.rss_end_mb:.1f} MB", f"< {TARGET_RSS_MB:g} MB",
         fig.rss_end_mb < TARGET_RSS_MB),
    ]  # fmt: skip
    print()
    for what, figure, target, met in checks:
        verdict = "ok" if met else "BELOW TARGET"
        print(f"verdict {what:<20}{figure:>12}  target {target:<10} {verdict}")
    missed = sum(not met for *_, met in checks)
    print(f"overall: {'every target met' if not missed else f'{missed} of 4 targets MISSED'}")
    return 0 if not missed else 1


# -- main -------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> Figures:
    with ExitStack() as stack:
        try:
            return setup_and_measure(stack, args)
        finally:
            # Disarm before the stack unwinds, so that the alarm cannot cut a clean-up short.
            signal.alarm(0)
    raise AssertionError("unreachable")


def setup_and_measure(stack: ExitStack, args: argparse.Namespace) -> Figures:
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="b24gate-bench-")))
    port = free_port()
    public_url = f"http://127.0.0.1:{port}"
    env = clean_env(tmp / "data", public_url)
    sandbox, secret = stack.enter_context(
        sandbox_process(
            "--rate", "0", "--scope", SCOPE, core=0,
            redirect_uri=f"{public_url}/oauth/callback", start_timeout=STEP_TIMEOUT,
        )
    )  # fmt: skip
    secret_file = tmp / "client-secret"
    secret_file.write_text(secret)
    log_file = tmp / "gateway.log"
    gateway_pid = stack.enter_context(gateway_process(env, port, log_file))
    # No budget on the gateway's side either: this measures the gateway's own cost, not its
    # scheduler's pacing (bench/limits.py measures that).
    no_budget = ("--rate", "0") if gateway_has_limits(env) else ()
    key = connect_portal(env, sandbox, secret_file, PORTAL, SCOPE, *no_budget)
    token = access_token(sandbox, register_direct_app(sandbox), client_id=DIRECT_APP)
    direct = Endpoint(
        "direct",
        f"{sandbox}/rest/{METHOD}.json",
        json.dumps({"auth": token}).encode(),
        {"Content-Type": "application/json"},
        b'"result"',
    )
    gateway = Endpoint(
        "gateway",
        f"{public_url}/api/v1/call",
        json.dumps({"portal": PORTAL, "method": METHOD, "params": {}}).encode(),
        {"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
        b'"success":true',
    )
    try:
        return asyncio.run(measure(direct, gateway, gateway_pid, args))
    except BenchError as exc:
        raise BenchError(f"{exc} (gateway log: {tail(log_file)})") from None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequential", type=int, default=2000, help="sequential calls each way")
    parser.add_argument("--calls", type=int, default=5000, help="concurrent calls each way")
    parser.add_argument("--concurrency", type=int, default=20, help="concurrent clients")
    parser.add_argument("--rss-calls", type=int, default=10_000, help="gateway calls before RSS")
    parser.add_argument("--time-limit", type=int, default=300, help="seconds for the whole run")
    args = parser.parse_args()
    bound_run(args.time_limit)
    try:
        figures = run(args)
    except BenchError as exc:
        print(f"overhead benchmark: could not measure: {exc}", file=sys.stderr)
        return 2
    return report(figures, args)


if __name__ == "__main__":
    sys.exit(main())
