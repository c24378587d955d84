"""Start ``b24gate sandbox`` as a separate process for a benchmark, and connect to it."""

from __future__ import annotations

import json
import os
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


@contextmanager
def sandbox_process(*flags: str, core: int = 0) -> Iterator[tuple[str, str]]:
    """Yield ``(base_url, client_secret)`` of a sandbox running in its own process."""
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
            REDIRECT,
            *flags,
        ]
        proc = subprocess.Popen(pinned(cmd, core), stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            base_url = proc.stdout.readline().strip()
            if not base_url.startswith("http"):
                raise RuntimeError("the sandbox did not start")
            yield base_url, secret
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def access_token(base_url: str, secret: str) -> str:
    """The authorization-code flow, as a client follows it."""
    opener = urllib.request.build_opener(NoRedirect)
    query = urlencode({"client_id": CLIENT_ID, "state": "bench"})
    try:
        opener.open(f"{base_url}/oauth/authorize/?{query}", timeout=10)
    except urllib.error.HTTPError as redirect:
        location = redirect.headers["Location"]
    code = parse_qs(urlsplit(location).query)["code"][0]
    form = urlencode(
        {
            "grant_type": "authorization_code",
            "client_id": CLIENT_ID,
            "client_secret": secret,
            "code": code,
        }
    ).encode()
    with urllib.request.urlopen(f"{base_url}/oauth/token/", data=form, timeout=10) as response:
        token: str = json.load(response)["access_token"]
    return token
