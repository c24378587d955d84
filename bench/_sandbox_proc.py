"""Start ``b24gate sandbox`` and ``b24gate serve`` as separate processes for a benchmark.

The sandbox half: :func:`sandbox_process`, :func:`access_token`, :func:`control` (its
``/_sandbox/`` API). The gateway half: :func:`gateway_process` (a temporary data directory
comes from the caller, through :func:`clean_env`), :func:`connect_portal` (``portal add``,
``portal authorize`` opened by an HTTP client that follows the redirects, ``client add``, as
an administrator does) and :func:`b24gate` for any other command. A failed step raises
:class:`BenchError`.
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

# Re-exported for the benchmarks: a port below the ephemeral range.
from b24gate.testing import free_port as free_port

REDIRECT = "http://127.0.0.1:9/callback"
CLIENT_ID = "local.bench"
STEP_TIMEOUT = 60.0  # one CLI command, one start-up, one HTTP exchange of the setup


class BenchError(Exception):
    """The benchmark could not run; the message says which step failed."""


class TimeLimit(BenchError):
    """The whole run passed ``--time-limit``."""


def _time_limit(signum: int, frame: FrameType | None) -> None:
    raise TimeLimit("the time limit passed")


def _terminated(signum: int, frame: FrameType | None) -> None:
    raise BenchError("terminated")


def bound_run(seconds: int) -> None:
    """End the run with :class:`TimeLimit` after ``seconds``, and on SIGTERM with an error,
    so that the caller's clean-up (processes, temporary directories) always runs."""
    signal.signal(signal.SIGALRM, _time_limit)
    signal.signal(signal.SIGTERM, _terminated)
    signal.alarm(seconds)


def run_bounded(setup: Callable[[ExitStack], None]) -> None:
    """Run ``setup`` with an exit stack for what it starts; the :func:`bound_run` alarm is
    disarmed before the stack unwinds, so that it cannot cut a clean-up short."""
    with ExitStack() as stack:
        try:
            setup(stack)
        finally:
            signal.alarm(0)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def pinned(cmd: Sequence[str], core: int) -> list[str]:
    """Pin ``cmd`` to one core where taskset exists and the machine has more than one."""
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        return ["taskset", "-c", str(core), *cmd]
    return list(cmd)


def first_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """The first line ``proc`` prints on stdout, or ``""`` if none comes within ``timeout``."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            return ""
    return proc.stdout.readline().strip()


def stop(proc: subprocess.Popen[str], timeout: float = 10) -> None:
    """Terminate ``proc``; kill it if it does not exit within ``timeout``."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


@contextmanager
def sandbox_process(
    *flags: str, core: int = 0, redirect_uri: str = REDIRECT, start_timeout: float = 30
) -> Iterator[tuple[str, str]]:
    """Yield ``(base_url, client_secret)`` of a sandbox running in its own process.

    Its app ``CLIENT_ID`` has ``redirect_uri`` as its registered handler.
    """
    with tempfile.TemporaryDirectory() as tmp:
        secret_file = Path(tmp) / "secret"
        secret = os.urandom(24).hex()
        secret_file.write_text(secret)
        cmd = [
            sys.executable,
            "-m",
            "b24gate",
            "sandbox",
            "--auto-approve",
            "--client-id",
            CLIENT_ID,
            "--client-secret-file",
            str(secret_file),
            "--redirect-uri",
            redirect_uri,
            *flags,
        ]
        proc = subprocess.Popen(pinned(cmd, core), stdout=subprocess.PIPE, text=True)
        try:
            base_url = first_line(proc, start_timeout)
            if not base_url.startswith("http"):
                raise RuntimeError("the sandbox did not start")
            yield base_url, secret
        finally:
            stop(proc)


def access_token(base_url: str, secret: str, client_id: str = CLIENT_ID) -> str:
    """The authorization-code flow, as a client follows it (the redirect is not followed)."""
    opener = urllib.request.build_opener(NoRedirect)
    query = urlencode({"client_id": client_id, "state": "bench"})
    try:
        opener.open(f"{base_url}/oauth/authorize/?{query}", timeout=10)
    except urllib.error.HTTPError as redirect:
        location = redirect.headers["Location"]
    code = parse_qs(urlsplit(location).query)["code"][0]
    form = urlencode(
        {
            "grant_type": "authorization_code",
            "client_id": client_id,
            "client_secret": secret,
            "code": code,
        }
    ).encode()
    with urllib.request.urlopen(f"{base_url}/oauth/token/", data=form, timeout=10) as response:
        token: str = json.load(response)["access_token"]
    return token


def control(base_url: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """``GET /_sandbox/<path>`` (``body`` None) or ``POST`` it with ``body``; the JSON answer."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"{base_url}/_sandbox/{path}", data=data, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=STEP_TIMEOUT) as answer:
            return json.load(answer)
    except OSError as exc:
        raise BenchError(f"the sandbox's /_sandbox/{path} failed: {exc}") from None


# -- the gateway ------------------------------------------------------------------------


def clean_env(data_dir: Path, public_url: str) -> dict[str, str]:
    """This environment without any ``B24GATE_*`` of the caller's, plus the gateway's two."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("B24GATE_")}
    env["B24GATE_DATA_DIR"] = str(data_dir)
    env["B24GATE_PUBLIC_URL"] = public_url
    return env


def b24gate(args: Sequence[str], env: dict[str, str]) -> str:
    """Run one ``b24gate`` command; its stdout, stripped, or :class:`BenchError`."""
    cmd = [sys.executable, "-m", "b24gate", *args]
    try:
        done = subprocess.run(
            cmd, env=env, capture_output=True, text=True, timeout=STEP_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"`b24gate {' '.join(args[:2])}` did not finish in time") from None
    if done.returncode != 0:
        raise BenchError(f"`b24gate {' '.join(args[:2])}` failed: {done.stderr.strip()[-500:]}")
    return done.stdout.strip()


def gateway_has_limits(env: dict[str, str]) -> bool:
    """Whether ``b24gate portal add`` takes ``--rate`` and ``--burst`` (per-portal budgets)."""
    done = subprocess.run(
        [sys.executable, "-m", "b24gate", "portal", "add", "--help"],
        env={**env, "COLUMNS": "200", "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT,
        check=False,
    )
    return "--rate" in done.stdout and "--burst" in done.stdout


def http_get(url: str, opener: urllib.request.OpenerDirector | None = None) -> tuple[int, str]:
    """GET ``url`` following redirects (unless ``opener`` says otherwise)."""
    try:
        with (opener or urllib.request.build_opener()).open(url, timeout=STEP_TIMEOUT) as answer:
            return answer.status, answer.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")
    except OSError:
        return 0, ""


def tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@contextmanager
def gateway_process(env: dict[str, str], port: int, log_file: Path, core: int = 1) -> Iterator[int]:
    """Yield the pid of ``b24gate serve`` once its ``/healthz`` answers."""
    cmd = [sys.executable, "-m", "b24gate", "serve", "--port", str(port)]
    with log_file.open("w") as log:
        # taskset execs the command, so the pid is the gateway's own.
        proc = subprocess.Popen(pinned(cmd, core), env=env, stdout=log, stderr=log, text=True)
    try:
        deadline = time.monotonic() + STEP_TIMEOUT
        while http_get(f"http://127.0.0.1:{port}/healthz")[0] != 200:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"the gateway did not start: {tail(log_file)}")
            time.sleep(0.1)
        yield proc.pid
    finally:
        stop(proc)


def connect_portal(
    env: dict[str, str],
    sandbox: str,
    secret_file: Path,
    portal: str,
    scope: str,
    *portal_flags: str,
) -> str:
    """Register (``portal add`` with ``portal_flags``), connect and open the portal as an
    administrator would; the key of a first client, named ``bench``."""
    b24gate(
        [
            "portal",
            "add",
            portal,
            "--url",
            sandbox,
            "--oauth-url",
            sandbox,
            "--client-id",
            CLIENT_ID,
            "--client-secret-file",
            str(secret_file),
            "--scope",
            scope,
            *portal_flags,
        ],
        env,
    )
    ticket_url = b24gate(["portal", "authorize", portal], env)
    # gateway /oauth/start -> sandbox /oauth/authorize/ -> gateway /oauth/callback
    status, page = http_get(ticket_url)
    if status != 200 or "Portal connected" not in page:
        raise BenchError(f"connecting the portal failed: HTTP {status}")
    return add_client(env, "bench", portal)


def add_client(env: dict[str, str], name: str, portal: str) -> str:
    """``b24gate client add NAME --portal PORTAL``: the new client's key."""
    key = b24gate(["client", "add", name, "--portal", portal], env)
    if not key.startswith("b24_"):
        raise BenchError("`b24gate client add` printed no key")
    return key
