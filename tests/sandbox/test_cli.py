"""`b24gate sandbox` as a user runs it: its own process, the base URL alone on stdout."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx

REDIRECT = "http://127.0.0.1:9/cb"


@contextmanager
def sandbox_process(*flags: str) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "b24gate", "sandbox", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def test_auto_approve_flow_ends_with_a_code_that_can_be_exchanged(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("s3cr3t-for-the-test\n")
    with sandbox_process(
        "--auto-approve", "--redirect-uri", REDIRECT, "--client-secret-file", str(secret_file)
    ) as proc:
        assert proc.stdout is not None
        base_url = proc.stdout.readline().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", base_url)
        with httpx.Client(base_url=base_url, follow_redirects=False, timeout=10) as http:
            redirect = http.get(
                "/oauth/authorize/", params={"client_id": "local.sandbox", "state": "cli"}
            )
            assert redirect.status_code == 302
            location = redirect.headers["location"]
            assert location.startswith(REDIRECT + "?")
            code = parse_qs(urlsplit(location).query)["code"][0]
            tokens = http.post(
                "/oauth/token/",
                data={
                    "grant_type": "authorization_code",
                    "client_id": "local.sandbox",
                    "client_secret": "s3cr3t-for-the-test",
                    "code": code,
                },
            )
            assert tokens.status_code == 200
            profile = http.post("/rest/profile", data={"auth": tokens.json()["access_token"]})
            assert profile.json()["result"]["ID"] == "1"


def test_generated_secret_goes_to_stderr_only() -> None:
    with sandbox_process("--port", "0") as proc:
        assert proc.stdout is not None
        assert proc.stderr is not None
        base_url = proc.stdout.readline().strip()
        first_err = proc.stderr.readline()
        assert base_url.startswith("http://")
        secret = re.search(r"client secret (\S+)", first_err)
        assert secret is not None
        assert len(secret.group(1)) >= 32
        assert secret.group(1) not in base_url


def test_latency_and_limit_flags_reach_the_portal() -> None:
    with sandbox_process(
        "--latency",
        "0.25",
        "--latency-per-command",
        "0.5",
        "--latency-per-page",
        "1.5",
        "--request-time-limit",
        "30",
        "--operating-limit",
        "100",
    ) as proc:
        assert proc.stdout is not None
        base_url = proc.stdout.readline().strip()
        with httpx.Client(base_url=base_url, timeout=10) as http:
            latency = http.get("/_sandbox/latency").json()
            limits = http.post("/_sandbox/limits", json={}).json()
    assert latency == {"request": 0.25, "command": 0.5, "page": 1.5}
    assert limits["request_time_limit"] == 30
    assert limits["operating_limit"] == 100


def test_usage_errors_exit_2() -> None:
    for flags in (
        ["--tls-cert", "x.pem"],
        ["--method-cost", "nonsense"],
        ["--rate", "-1"],
        ["--latency", "-0.5"],
        ["--latency-per-page", "x"],
        ["--request-time-limit", "-1"],
        ["--operating-limit", "-1"],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "b24gate", "sandbox", *flags],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 2, flags
        assert done.stdout == ""


def test_port_in_use_is_one_clear_line(tmp_path: Path) -> None:
    with sandbox_process() as proc:
        assert proc.stdout is not None
        port = proc.stdout.readline().strip().rsplit(":", 1)[1]
        done = subprocess.run(
            [sys.executable, "-m", "b24gate", "sandbox", "--port", port],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
