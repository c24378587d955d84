"""Durable jobs under chaos: a job of 10,000 ``crm.deal.add`` worked through at the standard
bucket while ``b24gate serve`` is killed with SIGKILL and started again (issue 12's table).

One run starts the sandbox (``b24gate sandbox --rate 2 --burst 50``, optionally with
``--latency``) in its own process pinned to core 0 where ``taskset`` exists, and the gateway
(``b24gate serve``, pinned to core 1) on a temporary data directory; it registers and
connects the portal as an administrator does (``--rate 2 --burst 50``) and adds a client.
Each run submits one job, ``POST /api/v1/jobs``, of ``--commands`` adds, each carrying a
``fields.ORIGIN_ID`` of its own, after the gateway(s) were started afresh and the sandbox's
bucket and write counts were reset (both buckets full, in step):

A. SQLite, one gateway, no kill: the time from the submission to the job's end.
B. SQLite, chaos: the gateway is killed ``--kills`` times at random moments (a gap drawn
   from ``--gap`` after it last answered ``/healthz``, ``--seed`` to repeat) and started
   again at once, while the job runs; killing stops when the job has ended.
C. as B, the job with ``external_id: "ORIGIN_ID"`` and ``B24GATE_JOB_SETTLE_AFTER=3``: every
   write the kills left open must be settled by the lookup, none ``outcome_unknown``.
D. PostgreSQL (``--database-url``, its ``public`` schema wiped at the start), two replicas
   sharing the bucket through Redis (``--redis-url``, that database flushed at the start);
   only the first is killed and started again; the job is submitted to the first, watched
   through the second. A dead replica's commands wait out its lease (``job_lease``, 30 s)
   before the survivor takes them: PostgreSQL replicas need not share a host, so nobody
   reaps them early as the SQLite gateway does with a dead process of its own host.

What "in flight at a kill" means: right after a kill (the process reaped, before the next
start) the store is read directly, ``job_commands`` rows of the job in state ``sent`` held
by the killed process (its holder id names its pid) and sent since it started. Those are
the commands marked sent whose answer was not recorded, and the crash rule says that each
of them, and nothing else, becomes ``outcome_unknown`` (run C: is settled). A command
adopted from an earlier kill keeps its first ``sent_at`` and is counted once.

Figures per run: commands accepted (the job's ``total``), results recorded (commands in a
final state: ok, error, outcome_unknown, cancelled, read back page by page), deals at the
sandbox (``GET /_sandbox/writes`` ``total``: adds that ran), doubled (its ``doubled``: an
ORIGIN_ID created twice), lost (accepted - recorded once the job has ended), outcome_unknown
and the sum of the commands in flight at the kills, the job's time (the job's own
``finished_at`` - the moment before the submission, one clock), the sandbox's requests and
its 503 refusals during the run.

Theory: the R = ceil(commands / 50) requests at full packing, the burst spent at once, the
rest at the drain rate, plus one request's latency L for the last answer:

    theory = max(0, R - burst) / rate + L       10,000 adds: (200 - 50) / 2 + 0 = 75.0 s

Ratio = theory / time, 1.0 the limit. Targets: every run 0 doubled, 0 lost, 0 errors, every
``ok`` with its deal at the sandbox, the job ended within its cap, and the kills all made
(a job that ends first proves less than asked; raise --commands or narrow --gap);
A ratio >= 0.85 (when its theory is above 0) and 0 outcome_unknown; B and D outcome_unknown
= in flight; C 0 outcome_unknown. A run's cap is 3 x theory + 60 s, plus per kill the
restart and the widest gap, plus for D two leases. Exit status: 0 every target met; 1 a
target missed; 2 a run could not be measured (a step failed, ``--time-limit`` passed): the
output says which. Every process and temporary directory it started is removed.

    python bench/jobs.py [--commands 10000] [--kills 50] [--only A,B,C,D] [--latency 0]
                         [--gap 0.5,3] [--seed N] [--time-limit 3600] [--keep-logs DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import signal
import socket
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import redis
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _sandbox_proc import (
    STEP_TIMEOUT,
    BenchError,
    TimeLimit,
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
from b24gate.store import make_engine, metadata

RATE = 2.0  # the sandbox's drain, requests/s
BURST = 50
PER_REQUEST = 50  # commands per batch at full packing
RATIO_TARGET = 0.85  # run A
SETTLE_AFTER = 3.0  # B24GATE_JOB_SETTLE_AFTER, every run (only C's job names an external id)
JOB_LEASE = 30.0  # the gateway's default job_lease: how long a dead replica's work waits (D)
RESTART = 5.0  # a generous restart of `b24gate serve`, for the cap
POLL = 0.2  # how often the job's state is read while waiting for its end
# After the kills, a job none of whose commands ends for this long is stuck, not slow: a
# dead replica's work waits one lease before the survivor takes it, twice that is plenty.
STALL = 2 * 30.0 + 30
PAGE = 1000  # results per page
FINAL = ("ok", "error", "outcome_unknown", "cancelled")
PORTAL = "bench"
SCOPE = "crm"
DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/test_d"
REDIS_URL = "redis://127.0.0.1:6379/5"


@dataclass(frozen=True)
class Run:
    """One line of the table: a backend, a way of killing, and the job's options."""

    name: str
    title: str
    postgres: bool
    chaos: bool
    external_id: str | None = None

    @property
    def replicas(self) -> int:
        return 2 if self.postgres else 1


RUNS = {
    "A": Run("A", "SQLite, no kill", postgres=False, chaos=False),
    "B": Run("B", "SQLite, kills", postgres=False, chaos=True),
    "C": Run("C", "SQLite, kills, external_id", postgres=False, chaos=True,
             external_id="ORIGIN_ID"),
    "D": Run("D", "PostgreSQL, 2 replicas, 1 killed", postgres=True, chaos=True),
}  # fmt: skip


@dataclass
class Outcome:
    """What one run measured."""

    accepted: int
    kills: int = 0
    in_flight: int = 0  # commands sent and unrecorded at the kills, summed
    states: Counter[str] = field(default_factory=Counter)  # every command's final state
    deals: int = 0  # adds the sandbox ran
    doubled: int = 0
    ok_without_deal: int = 0  # an "ok" whose ORIGIN_ID the sandbox never created
    unknown_ran: int = 0  # outcome_unknown whose add did reach the sandbox
    settled: int = 0  # "ok" found by the external-id lookup
    seconds: float | None = None  # None: the job did not end (``cut`` says why)
    cut: str = ""
    restarts: list[float] = field(default_factory=list)  # each kill to /healthz again, s
    requests: int = 0
    refused: int = 0

    @property
    def recorded(self) -> int:
        return sum(self.states[s] for s in FINAL)

    @property
    def lost(self) -> int:
        return self.accepted - self.recorded

    @property
    def unknown(self) -> int:
        return self.states["outcome_unknown"]


def theory(commands: int, latency: float) -> float:
    """The module docstring's formula."""
    return max(0, math.ceil(commands / PER_REQUEST) - BURST) / RATE + latency


def cap(run: Run, args: argparse.Namespace) -> float:
    """How long a run may take before it counts as cut (the docstring's rule)."""
    seconds = 3 * theory(args.commands, args.latency) + 60
    if run.chaos:
        seconds += args.kills * (RESTART + args.gap[1])
    if run.postgres:
        seconds += 2 * JOB_LEASE
    return seconds


# -- the gateway's HTTP API -------------------------------------------------------------


def api(url: str, key: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    """GET ``url`` (``body`` None) or POST ``body`` as JSON with the client key; status and
    the JSON answer (the text when it is not JSON)."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=STEP_TIMEOUT) as answer:
            status, payload = answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        status, payload = exc.code, exc.read()
    except OSError as exc:
        raise BenchError(f"{url}: {exc}") from None
    try:
        return status, json.loads(payload)
    except ValueError:
        return status, payload.decode("utf-8", "replace")


def job_view(base: str, key: str, job_id: str) -> dict[str, Any]:
    status, answer = api(f"{base}/api/v1/jobs/{job_id}", key)
    if status != 200:
        raise BenchError(f"GET /api/v1/jobs/<id> answered HTTP {status}: {str(answer)[:300]}")
    view: dict[str, Any] = answer["job"]
    return view


def ended(view: dict[str, Any]) -> bool:
    return view["state"] in ("done", "cancelled") and view["counts"]["sent"] == 0


def results(base: str, key: str, job_id: str) -> list[dict[str, Any]]:
    """Every command's result, page by page as 1C reads them."""
    items: list[dict[str, Any]] = []
    after: int | None = -1
    while after is not None:
        url = f"{base}/api/v1/jobs/{job_id}/results?after={after}&limit={PAGE}"
        status, page = api(url, key)
        if status != 200:
            raise BenchError(f"GET /api/v1/jobs/<id>/results answered HTTP {status}: "
                             f"{str(page)[:300]}")  # fmt: skip
        items.extend(page["items"])
        after = page["next_after"]
    return items


def deal(tag: str, i: int) -> dict[str, Any]:
    fields = {"TITLE": f"jobs {tag} {i}", "ORIGIN_ID": origin(tag, i), "OPPORTUNITY": 1000 + i,
              "CURRENCY_ID": "RUB"}  # fmt: skip
    return {"method": "crm.deal.add", "params": {"fields": fields}}


def origin(tag: str, i: int) -> str:
    return f"{tag}-{i}"


def submit(base: str, key: str, run: Run, commands: int) -> tuple[str, int]:
    """``POST /api/v1/jobs``: the job's id and the commands it accepted."""
    body: dict[str, Any] = {
        "portal": PORTAL,
        "commands": [deal(run.name, i) for i in range(commands)],
    }
    if run.external_id:
        body["external_id"] = run.external_id
    status, answer = api(f"{base}/api/v1/jobs", key, body)
    if status != 202:
        raise BenchError(f"POST /api/v1/jobs answered HTTP {status}: {str(answer)[:300]}")
    return answer["job"]["id"], int(answer["job"]["total"])


# -- processes --------------------------------------------------------------------------


class Gateway:
    """``b24gate serve`` on a fixed port, killed and started again at will; each start logs
    to a file of its own (``<name>-<n>.log``)."""

    def __init__(self, name: str, env: dict[str, str], port: int, log_dir: Path) -> None:
        self.name, self.env, self.port, self.log_dir = name, env, port, log_dir
        self.url = f"http://127.0.0.1:{port}"
        self.stack = ExitStack()
        self.pid = 0
        self.started_at = 0.0  # wall clock, as the store's sent_at
        self.starts = 0

    @property
    def log_file(self) -> Path:
        return self.log_dir / f"{self.name}-{self.starts}.log"

    def start(self) -> None:
        self.starts += 1
        self.started_at = time.time()
        core = min(1, (os.cpu_count() or 1) - 1)
        self.pid = self.stack.enter_context(
            gateway_process(self.env, self.port, self.log_file, core=core)
        )

    def kill(self) -> tuple[int, float]:
        """SIGKILL, reaped: the dead process's pid and when it started."""
        pid, since = self.pid, self.started_at
        os.kill(pid, signal.SIGKILL)
        self.stop()
        return pid, since

    def stop(self) -> None:
        self.stack.close()
        self.pid = 0

    def log_tail(self) -> str:
        return tail(self.log_file)


class Ledger:
    """The store read directly (the gateway offers no view of who holds what): the commands
    a killed process left sent and unrecorded."""

    def __init__(self, url: str) -> None:
        self._runner = asyncio.Runner()
        self._engine = make_engine(url)
        self._commands = metadata.tables["job_commands"]

    def in_flight(self, job_id: str, pid: int, since: float) -> int:
        return self._runner.run(self._in_flight(job_id, pid, since))

    async def _in_flight(self, job_id: str, pid: int, since: float) -> int:
        c = self._commands
        query = (
            sa.select(sa.func.count())
            .select_from(c)
            .where(
                c.c.job_id == job_id,
                c.c.state == "sent",
                c.c.holder.startswith(f"{socket.gethostname()}:{pid}:", autoescape=True),
                c.c.sent_at >= since,
            )
        )
        async with self._engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())

    def close(self) -> None:
        try:
            self._runner.run(self._engine.dispose())
        finally:
            self._runner.close()


async def wipe_postgres(url: str) -> None:
    """An empty ``public`` schema in the benchmark's own database."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public")
    finally:
        await conn.close()


def flush_redis(url: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    except redis.RedisError as exc:
        raise BenchError(f"flushing {url} failed: {exc}") from None
    finally:
        client.close()


# -- one backend, its runs --------------------------------------------------------------


@dataclass
class Bench:
    """What the runs of one backend share."""

    args: argparse.Namespace
    sandbox: str
    secret_file: Path
    port: int  # the public URL's: the sandbox sends the OAuth redirect there
    log_dir: Path
    rng: random.Random
    gateways: list[Gateway] = field(default_factory=list)
    key: str = ""
    ledger: Ledger | None = None

    def stop(self) -> None:
        for gateway in self.gateways:
            gateway.stop()
        if self.ledger is not None:
            self.ledger.close()
            self.ledger = None

    def open(self, postgres: bool, tmp: Path) -> None:
        """Start the backend's gateway(s) on a new data directory and connect the portal."""
        data_dir = tmp / ("postgres" if postgres else "sqlite")
        env = clean_env(data_dir, f"http://127.0.0.1:{self.port}")
        env["B24GATE_JOB_SETTLE_AFTER"] = f"{SETTLE_AFTER:g}"
        url = f"sqlite:///{data_dir}/b24gate.db"
        if postgres:
            url = self.args.database_url
            asyncio.run(wipe_postgres(url))
            flush_redis(self.args.redis_url)
            env["B24GATE_DATABASE_URL"] = url
            env["B24GATE_REDIS_URL"] = self.args.redis_url
        prefix = "pg" if postgres else "sqlite"
        ports = [self.port, free_port()][: 2 if postgres else 1]
        self.gateways = [Gateway(f"{prefix}{n + 1}", env, port, self.log_dir)
                         for n, port in enumerate(ports)]  # fmt: skip
        self.gateways[0].start()
        budget = ("--rate", f"{RATE:g}", "--burst", str(BURST))
        self.key = connect_portal(env, self.sandbox, self.secret_file, PORTAL, SCOPE, *budget)
        for gateway in self.gateways[1:]:
            gateway.start()
        self.ledger = Ledger(url)

    def fresh(self) -> None:
        """Every gateway started again and both buckets full: the run starts in step."""
        for gateway in self.gateways:
            gateway.stop()
        for gateway in self.gateways:
            gateway.start()
        control(self.sandbox, "limits", {"rate": RATE, "burst": BURST, "reset": True})
        control(self.sandbox, "writes/reset", {})

    def measure(self, run: Run) -> Outcome:
        """Submit the run's job, kill as the run says, wait for the job's end, read back."""
        self.fresh()
        victim, watcher = self.gateways[0], self.gateways[-1]
        before = control(self.sandbox, "counters")
        deadline = time.monotonic() + cap(run, self.args)
        submitted = time.time()
        job_id, accepted = submit(victim.url, self.key, run, self.args.commands)
        got = Outcome(accepted)
        if run.chaos:
            self.chaos(job_id, victim, watcher, got, deadline)
        view = self.wait(job_id, watcher, got, deadline)
        if ended(view) and view["finished_at"] is not None:
            got.seconds = float(view["finished_at"]) - submitted
        after = control(self.sandbox, "counters")
        got.requests = int(after["rest_calls"]) - int(before["rest_calls"])
        got.refused = int(after["rejected_503"]) - int(before["rejected_503"])
        self.check(run, job_id, watcher, got)
        return got

    def wait(self, job_id: str, watcher: Gateway, got: Outcome, deadline: float) -> dict[str, Any]:
        """The job's view once it has ended, or when it passed the cap or stalled."""
        view = job_view(watcher.url, self.key, job_id)
        done, changed = view["done"], time.monotonic()
        while not ended(view):
            now = time.monotonic()
            if now > deadline:
                got.cut = "not ended within the run's cap"
                break
            if now - changed > STALL:
                got.cut = f"stalled: no command ended in {STALL:.0f} s, {view['counts']}"
                break
            time.sleep(POLL)
            view = job_view(watcher.url, self.key, job_id)
            if view["done"] != done:
                done, changed = view["done"], time.monotonic()
        return view

    def chaos(
        self, job_id: str, victim: Gateway, watcher: Gateway, got: Outcome, deadline: float
    ) -> None:
        """Kill ``victim`` up to ``--kills`` times while the job runs, summing what each kill
        left in flight."""
        assert self.ledger is not None
        low, high = self.args.gap
        for _ in range(self.args.kills):
            time.sleep(self.rng.uniform(low, high))
            if time.monotonic() > deadline or ended(job_view(watcher.url, self.key, job_id)):
                return
            killed = time.monotonic()
            pid, since = victim.kill()
            got.kills += 1
            got.in_flight += self.ledger.in_flight(job_id, pid, since)
            victim.start()
            got.restarts.append(time.monotonic() - killed)

    def check(self, run: Run, job_id: str, watcher: Gateway, got: Outcome) -> None:
        """Every command's state, and each against the deals the sandbox made."""
        items = results(watcher.url, self.key, job_id)
        got.states = Counter(item["state"] for item in items)
        writes = control(self.sandbox, "writes")
        made: dict[str, int] = writes["by_external_id"]
        got.deals = int(writes["total"])
        got.doubled = len(writes["doubled"])
        for item in items:
            present = f"crm.deal:ORIGIN_ID:{origin(run.name, item['index'])}" in made
            if item["state"] == "ok":
                got.ok_without_deal += not present
                got.settled += bool(item.get("settled"))
            elif item["state"] == "outcome_unknown":
                got.unknown_ran += present


# -- the run ----------------------------------------------------------------------------

Results = dict[Run, Outcome | str]  # a reason when not measured


def measure_backend(bench: Bench, runs: Sequence[Run], res: Results, tmp: Path) -> None:
    """Open the backend, then each run; a run that fails is recorded and the rest go on."""
    try:
        bench.open(runs[0].postgres, tmp)
    except TimeLimit:
        raise
    except BenchError as exc:
        for run in runs:
            res[run] = f"setting up failed: {exc}"
        return
    for run in runs:
        try:
            res[run] = bench.measure(run)
        except TimeLimit:
            raise
        except BenchError as exc:
            logs = " / ".join(f"{g.name}: {g.log_tail()}" for g in bench.gateways)
            res[run] = f"{exc} (gateway logs: {logs})"


def setup_and_measure(stack: ExitStack, args: argparse.Namespace, res: Results) -> None:
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="b24gate-jobs-")))
    log_dir = args.keep_logs or tmp / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    flags = ["--rate", f"{RATE:g}", "--burst", str(BURST), "--scope", SCOPE]
    flags += ["--latency", f"{args.latency:g}"]
    sandbox, secret = stack.enter_context(
        sandbox_process(*flags, core=0, redirect_uri=f"http://127.0.0.1:{port}/oauth/callback",
                        start_timeout=STEP_TIMEOUT)
    )  # fmt: skip
    secret_file = tmp / "client-secret"
    secret_file.write_text(secret)
    rng = random.Random(args.seed)
    for postgres in (False, True):
        runs = [run for run in res if run.postgres == postgres]
        if not runs:
            continue
        bench = Bench(args, sandbox, secret_file, port, log_dir, rng)
        try:
            measure_backend(bench, runs, res, tmp)
        finally:
            bench.stop()


def run(args: argparse.Namespace, res: Results) -> None:
    run_bounded(lambda stack: setup_and_measure(stack, args, res))


# -- report -----------------------------------------------------------------------------


def misses(run: Run, got: Outcome, args: argparse.Namespace) -> list[str]:
    """What this run missed of its targets (the module docstring's list)."""
    found = []
    if got.seconds is None:
        found.append(got.cut or "not ended")
    if got.doubled:
        found.append(f"{got.doubled} doubled")
    if got.lost:
        found.append(f"{got.lost} lost")
    if got.states["error"]:
        found.append(f"{got.states['error']} errors")
    if got.ok_without_deal:
        found.append(f"{got.ok_without_deal} ok without a deal")
    if run.chaos and got.kills < args.kills:
        found.append(f"the job ended after {got.kills} of {args.kills} kills")
    if run.external_id and got.unknown:
        found.append(f"{got.unknown} outcome_unknown with external_id")
    elif not run.external_id and got.unknown != got.in_flight:
        found.append(f"outcome_unknown {got.unknown} != in flight {got.in_flight}")
    best = theory(got.accepted, args.latency)
    if run.name == "A" and got.seconds and best > 0 and best / got.seconds < RATIO_TARGET:
        found.append(f"ratio < {RATIO_TARGET:g}")
    return found


def line(run: Run, got: Outcome | str, verdict: str, args: argparse.Namespace) -> str:
    head = f"{run.name}  {run.title:<33}"
    best = theory(args.commands, args.latency)
    if isinstance(got, str):
        return f"{head} {'':>85} {best:>6.1f} {'':>18} {verdict}"
    time_cell = f"{got.seconds:.1f}" if got.seconds is not None else "-"
    ratio = "-" if best == 0 or not got.seconds else f"{best / got.seconds:.2f}"
    return (
        f"{head} {got.kills:>5} {got.accepted:>8} {got.recorded:>8} {got.deals:>7} "
        f"{got.doubled:>7} {got.lost:>5} {got.unknown:>7} {got.in_flight:>9} {got.settled:>7} "
        f"{time_cell:>7} {best:>6.1f} {ratio:>5} {got.requests:>5} {got.refused:>6}  {verdict}"
    )


def report(args: argparse.Namespace, res: Results) -> int:
    print(
        f"\n{'run':<3} {'':<33} {'kills':>5} {'accepted':>8} {'recorded':>8} {'deals':>7} "
        f"{'doubled':>7} {'lost':>5} {'unknown':>7} {'in flight':>9} {'settled':>7} "
        f"{'time s':>7} {'theory':>6} {'ratio':>5} {'reqs':>5} {'503':>6}  verdict"
    )
    verdicts: dict[Run, str] = {}
    for r, got in res.items():
        if isinstance(got, str):
            verdicts[r] = "n/a"
        else:
            found = misses(r, got, args)
            verdicts[r] = f"MISS: {', '.join(found)}" if found else "PASS"
        print(line(r, got, verdicts[r], args))
    print(
        "unknown = outcome_unknown; in flight = sent and unrecorded at the kills; settled = ok "
        "found by the external-id lookup; deals = adds the sandbox ran; 503 = its refusals"
    )
    for r, got in res.items():
        if isinstance(got, str):
            print(f"run {r.name}: not measured: {got}")
            continue
        notes = []
        if got.restarts:
            notes.append(f"a kill to /healthz again took {statistics.median(got.restarts):.1f} s "
                         f"(median of {len(got.restarts)})")  # fmt: skip
        if got.unknown:
            notes.append(f"of {got.unknown} outcome_unknown, {got.unknown_ran} had reached the "
                         "sandbox (a deal exists), the others had not")  # fmt: skip
        if notes:
            print(f"run {r.name}: {'; '.join(notes)}")
    unmeasured = sum(v == "n/a" for v in verdicts.values())
    missed = sum(v.startswith("MISS") for v in verdicts.values())
    if unmeasured:
        print(f"overall: COULD NOT MEASURE {unmeasured} run(s); {missed} missed")
        return 2
    print(f"overall: {'every target met' if not missed else f'{missed} run(s) MISSED'}")
    return 0 if not missed else 1


def configuration(args: argparse.Namespace) -> None:
    best = theory(args.commands, args.latency)
    print(
        f"b24gate jobs under chaos: {args.commands:,} crm.deal.add a job; sandbox bucket "
        f"{RATE:g} requests/s, burst {BURST}, latency {args.latency:g} s; gateway the same "
        f"budget; B24GATE_JOB_SETTLE_AFTER={SETTLE_AFTER:g}\n"
        f"theory = max(0, ceil(commands / {PER_REQUEST}) - {BURST}) / {RATE:g} + latency = "
        f"{best:.1f} s; runs {','.join(r for r in args.only)}; kills {args.kills} a chaos "
        f"run, each {args.gap[0]:g}-{args.gap[1]:g} s after the gateway is up; seed {args.seed}"
    )
    if "D" in args.only:
        print(f"run D: {args.database_url} (public schema wiped), {args.redis_url} (flushed)")


# -- main -------------------------------------------------------------------------------


def run_names(text: str) -> list[str]:
    names = [x.strip().upper() for x in text.split(",") if x.strip()]
    unknown = [n for n in names if n not in RUNS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"runs are A, B, C, D (got {text!r})")
    return sorted(set(names))


def gap(text: str) -> tuple[float, float]:
    try:
        low, high = (float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError("--gap is MIN,MAX seconds, e.g. 0.5,3") from None
    if not 0 <= low <= high:
        raise argparse.ArgumentTypeError("--gap needs 0 <= MIN <= MAX")
    return low, high


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=10_000, help="crm.deal.add a job")
    parser.add_argument("--kills", type=int, default=50, help="SIGKILLs in a chaos run")
    parser.add_argument("--only", type=run_names, default=list(RUNS), help="runs, e.g. A,C")
    parser.add_argument("--latency", type=float, default=0.0,
                        help="seconds the sandbox adds to each request")  # fmt: skip
    parser.add_argument("--gap", type=gap, default=(0.5, 3.0),
                        help="MIN,MAX seconds from a start to the next kill")  # fmt: skip
    parser.add_argument("--seed", type=int, help="the kills' random moments (default: drawn)")
    parser.add_argument("--time-limit", type=int, default=3600, help="seconds for everything")
    parser.add_argument(
        "--database-url", default=DATABASE_URL, help="run D's database (its schema is WIPED)"
    )
    parser.add_argument("--redis-url", default=REDIS_URL, help="run D's Redis db (FLUSHED)")
    parser.add_argument("--keep-logs", type=Path, help="keep the gateways' logs (a file a start)")
    args = parser.parse_args()
    if not 1 <= args.commands <= 50_000 or args.kills < 0 or args.latency < 0:
        parser.error("--commands takes 1 to 50,000; --kills and --latency >= 0")
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1_000_000)
    configuration(args)
    bound_run(args.time_limit)
    res: Results = {RUNS[n]: "not reached: the run stopped before it" for n in args.only}
    try:
        run(args, res)
    except BenchError as exc:
        print(f"jobs benchmark: could not measure: {exc}", file=sys.stderr)
        report(args, res)
        return 2
    return report(args, res)


if __name__ == "__main__":
    sys.exit(main())
