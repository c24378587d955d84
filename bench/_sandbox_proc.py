"""Start ``b24gate sandbox`` as a separate process for a benchmark, and connect to it."""

from __future__ import annotations

import json
import os
import selectors
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

REDIRECT = "http://127.0.0.1:9/callback"
CLIENT_ID = "local.bench"


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
