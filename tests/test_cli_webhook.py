"""`b24gate portal add NAME --webhook-url-file F` and `portal set`, as a user runs them:
real processes against a sandbox process. The webhook's code never shows, on any stream
or in the database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

TIMEOUT = 30.0
STATUS_KEYS = ["name", "domain", "member_id", "state", "access_expires_at", "refresh_obtained_at"]


def environment(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("B24GATE_")}
    return {**env, "B24GATE_DATA_DIR": str(data_dir), **extra}


def run_all(*calls: tuple[dict[str, str], list[str]]) -> list[subprocess.CompletedProcess[str]]:
    """Independent commands side by side (each costs a second of imports)."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "b24gate", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            encoding="utf-8",
            env=env,
        )
        for env, args in calls
    ]
    done = []
    for (_, args), proc in zip(calls, procs, strict=True):
        try:
            out, err = proc.communicate(timeout=TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        done.append(subprocess.CompletedProcess(args, proc.returncode, out, err))
    return done


def b24gate(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_all((env, list(args)))[0]


@pytest.fixture(scope="module")
def sandbox_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("sandbox") / "sandbox.log"
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "b24gate", "sandbox", "--rate", "0"],
            stdout=subprocess.PIPE,
            stderr=err,
            encoding="utf-8",
        )
    stdout = proc.stdout
    assert stdout is not None
    try:
        yield stdout.readline().strip()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        stdout.close()


def new_webhook(sandbox_url: str) -> str:
    url: str = httpx.post(f"{sandbox_url}/_sandbox/webhooks", json={}, timeout=TIMEOUT).json()[
        "url"
    ]
    return url


def code_of(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[1]


def test_a_webhook_portal_from_the_command_line(tmp_path: Path, sandbox_url: str) -> None:
    data = tmp_path / "data"
    first, second = new_webhook(sandbox_url), new_webhook(sandbox_url)
    hook_file = tmp_path / "hook.url"
    hook_file.write_text(first + "\n")
    env = environment(data, SECOND_HOOK=second, APP_SECRET="app-secret-Zq8vW3xK1mN5pR7t")
    domain = sandbox_url.removeprefix("http://")
    port = domain.rsplit(":", 1)[1]
    # The same sandbox under another name, with a webhook it does not know.
    dead_file = tmp_path / "dead.url"
    dead_file.write_text(f"http://localhost:{port}/rest/1/0123456789abcdef/")

    added, dead, oauth = run_all(
        (env, ["portal", "add", "hook", "--webhook-url-file", str(hook_file)]),
        (env, ["portal", "add", "dead", "--webhook-url-file", str(dead_file)]),
        (env, ["portal", "add", "app", "--url", "https://app.bitrix24.ru",
               "--client-id", "local.app", "--client-secret-env", "APP_SECRET"]),
    )  # fmt: skip
    for done in (added, dead, oauth):
        assert done.returncode == 0, done.stderr
        assert done.stdout == ""
    assert f"incoming webhook at {domain}" in added.stderr
    assert "b24gate call hook profile" in added.stderr

    listing, status, as_json, called, authorize, wrong_kind = run_all(
        (env, ["portal", "list"]),
        (env, ["portal", "status", "hook"]),
        (env, ["portal", "status", "hook", "--json"]),
        (env, ["call", "hook", "profile"]),
        (env, ["portal", "authorize", "hook"]),
        (env, ["portal", "set", "app", "--webhook-url-file", str(hook_file)]),
    )
    assert sorted(listing.stdout.splitlines()) == [
        "app\tapp.bitrix24.ru\tnot_connected",
        f"dead\tlocalhost:{port}\tconnected",
        f"hook\t{domain}\tconnected",
    ]
    assert "kind: webhook" in status.stdout.splitlines()
    assert "state: connected" in status.stdout.splitlines()
    info = json.loads(as_json.stdout)
    assert list(info) == STATUS_KEYS
    assert (info["domain"], info["state"]) == (domain, "connected")
    assert called.returncode == 0, called.stderr
    assert json.loads(called.stdout)["result"]["ID"] == "1"
    assert authorize.returncode == 1
    assert "needs no authorization" in authorize.stderr
    assert wrong_kind.returncode == 1
    assert "uses an OAuth app" in wrong_kind.stderr

    refused = b24gate(env, "call", "dead", "profile")
    assert refused.returncode == 1
    assert "the webhook was refused: INVALID_CREDENTIALS" in refused.stderr
    assert "b24gate portal set dead --webhook-url-file" in refused.stderr
    dead_status = b24gate(env, "portal", "status", "dead")
    assert "state: needs_authorization" in dead_status.stdout.splitlines()
    fix = [line for line in dead_status.stdout.splitlines() if line.startswith("fix: ")]
    assert len(fix) == 1
    assert "`b24gate portal set dead --webhook-url-file FILE`" in fix[0]
    # The status gives the very advice the refused call gave.
    assert fix[0].removeprefix("fix: ") in refused.stderr

    replaced = b24gate(env, "portal", "set", "hook", "--webhook-url-env", "SECOND_HOOK")
    assert replaced.returncode == 0, replaced.stderr
    assert f"incoming webhook at {domain}" in replaced.stderr
    again = b24gate(env, "call", "hook", "crm.deal.list")
    assert again.returncode == 0, again.stderr
    received = httpx.get(f"{sandbox_url}/_sandbox/received", timeout=TIMEOUT).json()["urls"]
    assert f"/rest/1/{code_of(first)}/profile" in received
    assert received[-1] == f"/rest/1/{code_of(second)}/crm.deal.list"

    everything = [added, dead, oauth, listing, status, as_json, called, authorize, refused]
    everything += [wrong_kind, dead_status, replaced, again]
    stored = b"".join(p.read_bytes() for p in sorted(data.glob("b24gate.db*")))
    for secret in (code_of(first), code_of(second), "0123456789abcdef"):
        for done in everything:
            assert secret not in done.stdout + done.stderr, done.args
        assert secret.encode() not in stored


def test_webhook_usage_errors_exit_2_and_write_nothing(tmp_path: Path) -> None:
    code = "abc123def456gh78"
    good, with_method, plain_http = (tmp_path / n for n in ("good", "method", "http"))
    good.write_text(f"https://company.bitrix24.ru/rest/1/{code}/")
    with_method.write_text(f"https://company.bitrix24.ru/rest/1/{code}/profile.json")
    plain_http.write_text(f"http://company.bitrix24.ru/rest/1/{code}/")
    env = environment(tmp_path / "data", HOOK=good.read_text())
    add = ["portal", "add", "hook"]
    cases = {
        "with --client-id": [*add, "--webhook-url-file", str(good), "--client-id", "local.x"],
        "with --url": [*add, "--webhook-url-file", str(good), "--url", "https://x.bitrix24.ru"],
        "with --oauth-url": [
            *add, "--webhook-url-env", "HOOK", "--oauth-url", "https://oauth.bitrix.info"
        ],
        "both webhook options": [
            *add, "--webhook-url-file", str(good), "--webhook-url-env", "HOOK"
        ],
        "a method in the URL": [*add, "--webhook-url-file", str(with_method)],
        "http on a public host": [*add, "--webhook-url-file", str(plain_http)],
        "neither --url nor a webhook": [*add, "--client-id", "local.x"],
        "set without a webhook": ["portal", "set", "hook"],
    }  # fmt: skip
    results = run_all(*((env, args) for args in cases.values()))
    for case, done in zip(cases, results, strict=True):
        assert done.returncode == 2, (case, done.stderr)
        assert done.stdout == "", case
        assert "Traceback" not in done.stderr, case
        assert code not in done.stderr, case
    unset = b24gate(env, *add, "--webhook-url-env", "NO_SUCH_VARIABLE_FOR_B24GATE")
    assert unset.returncode == 1
    assert "NO_SUCH_VARIABLE_FOR_B24GATE is empty or unset" in unset.stderr
    assert not (tmp_path / "data").exists()
