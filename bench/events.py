"""Events from the portal to a long-polling consumer, in both modes (issue 13's benchmark).

The sandbox (``b24gate sandbox``, its bucket ``--rate``/``--burst``, pinned to core 0) and
the gateway (``b24gate serve`` on SQLite, core 1) run as processes of their own; the
portal is connected and a consumer key with ``--events '*'`` added as an administrator
does. For each mode the portal is subscribed to ``ONCRMDEALUPDATE`` (``b24gate events
subscribe``, ``--offline`` for offline), ``--changes`` deals are changed at the sandbox as a
user in the portal's pages would (``POST /_sandbox/changes``, ``--chunk`` deals a call, at
``--pace`` changes a second), and one consumer long-polls ``GET /api/v1/events`` (``wait``
5 s, ``limit`` 1000), acknowledging each page with the next. Each deal is changed once, so
offline mode's collapsing keeps every change.

Figures per mode: events received, lost (changed, never received) and doubled, events a
second (received / the time from the first change to the last event), the delay from a
change (the end of the ``/_sandbox/changes`` call that made it: Bitrix24 fires when the
hit ends) to its arrival at the consumer, p50 / p99 / max, and the portal's requests the
gateway spent (the sandbox's count of REST calls over the mode, subscribing included) per
1,000 events and a second over the run. Targets: 0 lost, 0 doubled; offline mode at most
10 requests per 1,000 events (the portal's budget is 2 a second: a thousand changes cost
the calls under 5 s of it; a drain comes at most every ``B24GATE_EVENT_DRAIN_INTERVAL``, so
a steady trickle of changes costs 0.2-0.3 requests a second). Exit 0 when met, 1 when
missed, 2 when a step failed.

    python bench/events.py [--changes 10000] [--chunk 100] [--pace 500] [--modes online,offline]
                           [--rate 2] [--burst 50] [--time-limit 900]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _sandbox_proc import (
    BenchError,
    add_client,
    b24gate,
    bound_run,
    clean_env,
    connect_portal,
    control,
    free_port,
    gateway_process,
    sandbox_process,
)

PORTAL = "bench"
EVENT = "ONCRMDEALUPDATE"
MAX_REQUESTS_PER_1000 = 10.0
POLL_WAIT = 5
PAGE = 1000


@dataclass
class Mode:
    name: str
    changed: dict[int, float] = field(default_factory=dict)  # deal id -> when changed
    received: Counter[int] = field(default_factory=Counter)
    arrived: dict[int, float] = field(default_factory=dict)  # deal id -> first arrival
    requests: int = 0
    started: float = 0.0
    error: str | None = None


def get_events(base: str, key: str, after: int | None, wait: int) -> dict[str, Any]:
    query = f"portal={PORTAL}&limit={PAGE}&wait={wait}" + (
        "" if after is None else f"&after={after}"
    )
    request = urllib.request.Request(
        f"{base}/api/v1/events?{query}", headers={"Authorization": f"Bearer {key}"}
    )
    with urllib.request.urlopen(request, timeout=POLL_WAIT + 30) as answer:
        body: dict[str, Any] = json.load(answer)
    return body


def consumer(base: str, key: str, mode: Mode, span: range, deadline: float) -> None:
    """Long-poll until every change of the deals in ``span`` arrived or the deadline;
    acknowledge each page."""
    expected = len(span)
    after: int | None = None
    try:
        while len(mode.arrived) < expected and time.monotonic() < deadline:
            page = get_events(base, key, after, POLL_WAIT)
            now = time.monotonic()
            for event in page["events"]:
                deal = int(event["data"]["FIELDS"]["ID"])
                if deal not in span:
                    continue  # an earlier mode's event that came late
                mode.received[deal] += 1
                mode.arrived.setdefault(deal, now)
            after = page["next"]
        get_events(base, key, after, 0)  # acknowledge the last page
    except (OSError, ValueError, KeyError) as exc:
        mode.error = f"the consumer failed: {exc}"


def produce(sandbox: str, mode: Mode, first: int, args: argparse.Namespace) -> None:
    """Change deals first..first+changes-1, ``chunk`` a call, at ``pace`` a second."""
    mode.started = time.monotonic()
    for offset in range(0, args.changes, args.chunk):
        count = min(args.chunk, args.changes - offset)
        start = first + offset
        control(
            sandbox,
            "changes",
            {"entity": "deal", "action": "update", "id": start, "count": count,
             "fields": {"COMMENTS": f"{mode.name} {offset}"}},
        )  # fmt: skip
        done = time.monotonic()
        for deal in range(start, start + count):
            mode.changed[deal] = done
        ahead = mode.started + (offset + count) / args.pace - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)


def measure(
    name: str, env: dict[str, str], base: str, sandbox: str, key: str, first: int,
    args: argparse.Namespace,
) -> Mode:  # fmt: skip
    mode = Mode(name)
    before = int(control(sandbox, "counters")["rest_calls"])
    b24gate(
        ["events", "subscribe", PORTAL, EVENT, *(["--offline"] if name == "offline" else [])], env
    )
    deadline = time.monotonic() + args.changes / args.pace + 120
    reader = threading.Thread(
        target=consumer,
        args=(base, key, mode, range(first, first + args.changes), deadline),
        daemon=True,
    )
    reader.start()
    produce(sandbox, mode, first, args)
    reader.join(max(0.0, deadline - time.monotonic()) + POLL_WAIT + 35)
    b24gate(["events", "unsubscribe", PORTAL, EVENT], env)
    mode.requests = int(control(sandbox, "counters")["rest_calls"]) - before
    return mode


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def report(modes: list[Mode], args: argparse.Namespace) -> int:
    print(
        f"{'mode':8} {'changed':>8} {'received':>8} {'lost':>5} {'doubled':>7} {'events/s':>9} "
        f"{'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'requests':>8} {'req/1000':>8} {'req/s':>6}  "
        "verdict"
    )
    status = 0
    for mode in modes:
        delays = [
            (mode.arrived[d] - mode.changed[d]) * 1000 for d in mode.arrived if d in mode.changed
        ]
        lost = len(set(mode.changed) - set(mode.arrived))
        doubled = sum(1 for n in mode.received.values() if n > 1)
        received = sum(mode.received.values())
        span = (max(mode.arrived.values()) - mode.started) if mode.arrived else math.inf
        per_1000 = mode.requests * 1000 / max(1, len(mode.arrived))
        per_second = mode.requests / span if span > 0 else math.inf
        misses = []
        if mode.error:
            misses.append(mode.error)
        if lost or doubled:
            misses.append(f"{lost} lost, {doubled} doubled")
        if mode.name == "offline" and per_1000 > MAX_REQUESTS_PER_1000:
            misses.append(f"{per_1000:.1f} requests per 1,000 events")
        verdict = "PASS" if not misses else "MISS: " + "; ".join(misses)
        status = max(status, 1 if misses else 0)
        stats = (
            (statistics.median(delays), percentile(delays, 0.99), max(delays))
            if delays
            else (math.nan, math.nan, math.nan)
        )
        print(
            f"{mode.name:8} {len(mode.changed):>8} {received:>8} {lost:>5} {doubled:>7} "
            f"{len(mode.arrived) / span:>9.0f} {stats[0]:>8.0f} {stats[1]:>8.0f} "
            f"{stats[2]:>8.0f} {mode.requests:>8} {per_1000:>8.1f} {per_second:>6.2f}  {verdict}"
        )
    print(
        f"changes {args.changes} ({args.chunk} a /_sandbox/changes call, {args.pace:g}/s); "
        f"portal budget {args.rate:g} requests/s, burst {args.burst}; delay = change to consumer"
    )
    return status


def run(args: argparse.Namespace) -> int:
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        port = free_port()
        public = f"http://127.0.0.1:{port}"
        flags = ("--rate", f"{args.rate:g}", "--burst", str(args.burst))
        sandbox, secret = stack.enter_context(
            sandbox_process(*flags, redirect_uri=f"{public}/oauth/callback")
        )
        secret_file = tmp / "secret"
        secret_file.write_text(secret)
        env = clean_env(tmp / "data", public)
        stack.enter_context(gateway_process(env, port, tmp / "serve.log"))
        connect_portal(env, sandbox, secret_file, PORTAL, "crm", *flags)
        key = b24gate(["client", "add", "events", "--portal", PORTAL, "--events", "*"], env)
        add_client(env, "other", PORTAL)  # a second key, so `portal` must be named
        modes = []
        for number, name in enumerate(args.modes):
            control(sandbox, "seed", {"count": args.changes})
            modes.append(measure(name, env, public, sandbox, key, args.changes * number + 1, args))
        return report(modes, args)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--changes", type=int, default=10_000)
    parser.add_argument("--chunk", type=int, default=100)
    parser.add_argument("--pace", type=float, default=500.0, help="changes a second")
    parser.add_argument("--modes", type=lambda s: s.split(","), default=["online", "offline"])
    parser.add_argument("--rate", type=float, default=2.0)
    parser.add_argument("--burst", type=int, default=50)
    parser.add_argument("--time-limit", type=int, default=900)
    args = parser.parse_args()
    if set(args.modes) - {"online", "offline"} or args.changes < 1 or args.chunk < 1:
        parser.error("--modes is online and/or offline; --changes and --chunk at least 1")
    bound_run(args.time_limit)
    try:
        return run(args)
    except BenchError as exc:
        print(f"bench/events.py: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
