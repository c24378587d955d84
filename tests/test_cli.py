"""The gateway's `b24gate` command as a user and a script run it: a real process each time.

docs/design.md §3: exit 0 ok, 1 error with a one-line message on stderr, 2 usage error; the result
(a URL, a key, JSON) alone on stdout and everything else on stderr.

Each invocation costs about a second of imports, so checks that do not depend on each
other run as concurrent processes (:func:`run_all`).
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from b24gate.testing import free_port

TIMEOUT = 30.0
SECRET = "cli-test-client-secret-Zq8vW3xK1mN5pR7tY9uA2sD4fG6hJ0"
STATUS_KEYS = [
    "name",
    "domain",
    "member_id",
    "state",
    "access_expires_at",
    "refresh_obtained_at",
]


def environment(data_dir: Path, **extra: str) -> dict[str, str]:
    """The caller's environment without any B24GATE_* setting, plus the test's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("B24GATE_")}
    return {**env, "B24GATE_DATA_DIR": str(data_dir), **extra}


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "b24gate", *args]


def b24gate(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(*args), capture_output=True, encoding="utf-8", env=env, timeout=TIMEOUT, check=False
    )


def run_all(
    *calls: tuple[dict[str, str], list[str]],
) -> list[subprocess.CompletedProcess[str]]:
    """Run independent commands side by side; their results in the order given."""
    procs = [
        (
            args,
            subprocess.Popen(
                command(*args),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                encoding="utf-8",
                env=env,
            ),
        )
        for env, args in calls
    ]
    done = []
    try:
        for args, proc in procs:
            out, err = proc.communicate(timeout=TIMEOUT)
            done.append(subprocess.CompletedProcess(args, proc.returncode, out, err))
    finally:
        for _, proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return done


def assert_usage_error(done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 2, (done.args, done.stderr)
    assert done.stdout == "", done.args
    assert "Traceback" not in done.stderr, done.args


def assert_error(done: subprocess.CompletedProcess[str], *fragments: str) -> None:
    """Exit 1, nothing on stdout, exactly one line on stderr holding every fragment."""
    assert done.returncode == 1, (done.args, done.stderr)
    assert done.stdout == "", done.args
    lines = done.stderr.splitlines()
    assert len(lines) == 1, (done.args, done.stderr)
    assert lines[0].startswith("b24gate: "), lines
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def read_until(
    proc: subprocess.Popen[str], done: Callable[[str], bool], timeout: float = TIMEOUT
) -> list[str]:
    """Lines of ``proc``'s stdout up to the first one ``done`` accepts; the process is killed
    (ending the read) if that takes longer than ``timeout``."""
    assert proc.stdout is not None
    watchdog = threading.Timer(timeout, proc.kill)
    watchdog.start()
    lines: list[str] = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if done(line):
                return lines
    finally:
        watchdog.cancel()
    raise AssertionError(f"{proc.args!r} ended (exit {proc.poll()}) after printing {lines!r}")


def stop(proc: subprocess.Popen[str]) -> int:
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()
    return proc.returncode


@contextmanager
def process(env: dict[str, str], log: Path, *args: str) -> Iterator[subprocess.Popen[str]]:
    """A long-running ``b24gate`` command: stdout piped, stderr into ``log``."""
    with log.open("w", encoding="utf-8") as err:
        proc = subprocess.Popen(
            command(*args), stdout=subprocess.PIPE, stderr=err, encoding="utf-8", env=env
        )
    try:
        yield proc
    finally:
        stop(proc)


def wait_healthy(proc: subprocess.Popen[str], base_url: str, log: Path) -> None:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the gateway exited {proc.returncode}: {log.read_text()}")
        try:
            if httpx.get(f"{base_url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"the gateway did not come up: {log.read_text()}")


def store_bytes(data_dir: Path) -> bytes:
    files = sorted(data_dir.glob("b24gate.db*"))
    assert files, list(data_dir.iterdir())
    return b"".join(f.read_bytes() for f in files)


def iso(value: Any) -> datetime:
    assert isinstance(value, str), value
    return datetime.fromisoformat(value)


# -- portal add ------------------------------------------------------------------------


def test_portal_add_is_quiet_on_stdout_and_keeps_the_secret_out_of_sight(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    env_secret = "cli-test-secret-from-env-Lk3Jh5Gf7Ds9Aq1Wr"
    env = environment(data)
    common = ["--client-id", "local.app"]
    by_file, by_env = run_all(
        (
            env,
            ["portal", "add", "main", "--url", "https://company.bitrix24.ru/", *common,
             "--client-secret-file", str(secret_file)],
        ),
        (
            {**env, "APP_SECRET": env_secret},
            ["portal", "add", "shop", "--url", "http://127.0.0.1:8443", *common,
             "--client-secret-env", "APP_SECRET", "--token-method", "get"],
        ),
    )  # fmt: skip
    for done, name in ((by_file, "main"), (by_env, "shop")):
        assert done.returncode == 0, done.stderr
        assert done.stdout == ""
        assert f"b24gate portal authorize {name}" in done.stderr

    duplicate, listing = run_all(
        (
            env,
            ["portal", "add", "main", "--url", "https://other.bitrix24.ru", *common,
             "--client-secret-file", str(secret_file)],
        ),
        (env, ["portal", "list"]),
    )  # fmt: skip
    assert_error(duplicate, "main", "already exists")
    assert listing.returncode == 0, listing.stderr
    assert sorted(listing.stdout.splitlines()) == [
        "main\tcompany.bitrix24.ru\tnot_connected",
        "shop\t127.0.0.1:8443\tnot_connected",
    ]

    for done in (by_file, by_env, duplicate, listing):
        for secret in (SECRET, env_secret):
            assert secret not in done.stdout + done.stderr
    stored = store_bytes(data)
    assert SECRET.encode() not in stored
    assert env_secret.encode() not in stored


def test_portal_add_usage_errors_exit_2_without_a_traceback(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET)
    env = environment(tmp_path / "data", APP_SECRET=SECRET)
    add = ["portal", "add", "main", "--client-id", "local.app"]
    by_file = ["--client-secret-file", str(secret_file)]
    cases = {
        "http on a public host": ["--url", "http://company.bitrix24.ru", *by_file],
        "a URL with a path": ["--url", "https://company.bitrix24.ru/rest/", *by_file],
        "an oauth URL with a path": [
            "--url", "https://company.bitrix24.ru", "--oauth-url", "https://oauth.bitrix.info/x",
            *by_file,
        ],
        "both secret options": [
            "--url", "https://company.bitrix24.ru", *by_file, "--client-secret-env", "APP_SECRET"
        ],
        "no secret option": ["--url", "https://company.bitrix24.ru"],
        "a bad token method": ["--url", "https://company.bitrix24.ru", *by_file,
                               "--token-method", "PUT"],
    }  # fmt: skip
    results = run_all(*((env, [*add, *flags]) for flags in cases.values()))
    for case, done in zip(cases, results, strict=True):
        assert done.returncode == 2, (case, done.stderr)
        assert_usage_error(done)
        assert SECRET not in done.stderr, case
    # Nothing was written: not even the store was opened.
    assert not (tmp_path / "data").exists()


# -- portal authorize, and everything after it against a live sandbox and gateway --------


def test_portal_authorize_of_an_unknown_portal_exits_1(tmp_path: Path) -> None:
    assert_error(b24gate(environment(tmp_path), "portal", "authorize", "nope"), "nope")


@dataclass
class Live:
    """A sandbox and `b24gate serve`, each its own process; portal `demo` connected."""

    env: dict[str, str]
    data: Path
    public_url: str
    sandbox_url: str
    serve_log: Path
    http: httpx.Client

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return b24gate(self.env, *args)

    def call(self, key: str, body: dict[str, Any]) -> httpx.Response:
        return self.http.post("/api/v1/call", json=body, headers={"Authorization": f"Bearer {key}"})


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    root = tmp_path_factory.mktemp("live")
    data = root / "data"
    secret_file = root / "secret"
    secret_file.write_text(SECRET + "\n")
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    env = environment(data, B24GATE_PUBLIC_URL=public)
    sandbox_args = [
        "sandbox", "--auto-approve", "--redirect-uri", f"{public}/oauth/callback",
        "--client-secret-file", str(secret_file), "--seed-deals", "3",
    ]  # fmt: skip
    serve_log = root / "serve.log"
    with (
        process(env, root / "sandbox.log", *sandbox_args) as sandbox,
        process(env, serve_log, "serve", "--port", str(port)) as serve,
        httpx.Client(base_url=public, timeout=TIMEOUT) as http,
    ):
        sandbox_url = read_until(sandbox, lambda line: True)[0].strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", sandbox_url)
        wait_healthy(serve, public, serve_log)

        added = b24gate(
            env,
            "portal", "add", "demo", "--url", sandbox_url, "--oauth-url", sandbox_url,
            "--client-id", "local.sandbox", "--client-secret-file", str(secret_file),
            "--scope", "crm,catalog,user",
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
        authorize = b24gate(env, "portal", "authorize", "demo")
        assert authorize.returncode == 0, authorize.stderr
        assert re.fullmatch(
            re.escape(public) + r"/oauth/start\?ticket=[A-Za-z0-9_-]{32,}\n", authorize.stdout
        ), authorize.stdout
        assert "15 minutes" in authorize.stderr
        url = authorize.stdout.strip()

        with httpx.Client(follow_redirects=True, timeout=TIMEOUT) as browser:
            page = browser.get(url)
            assert page.status_code == 200, page.text
            assert "Portal connected" in page.text
            # The ticket is one-time.
            assert browser.get(url).status_code == 403

        yield Live(env, data, public, sandbox_url, serve_log, http)
    # A graceful stop; uvicorn then re-raises the SIGTERM it caught, as a service should end.
    assert serve.returncode in (0, -signal.SIGTERM), serve_log.read_text()
    assert "Application shutdown complete" in serve_log.read_text()
    log = serve_log.read_text() + (root / "sandbox.log").read_text()
    assert SECRET not in log
    assert "Traceback" not in log


def test_portal_status_and_list_show_the_connected_portal(live: Live) -> None:
    as_json, human, listing = run_all(
        (live.env, ["portal", "status", "demo", "--json"]),
        (live.env, ["portal", "status", "demo"]),
        (live.env, ["portal", "list"]),
    )
    for done in (as_json, human, listing):
        assert done.returncode == 0, (done.args, done.stderr)

    assert as_json.stdout.count("\n") == 1
    status = json.loads(as_json.stdout)
    assert list(status) == STATUS_KEYS
    domain = live.sandbox_url.removeprefix("http://")
    assert status["name"] == "demo"
    assert status["domain"] == domain
    assert status["state"] == "connected"
    assert isinstance(status["member_id"], str)
    assert status["member_id"]
    now = datetime.now(UTC)
    assert iso(status["access_expires_at"]) > now
    assert iso(status["refresh_obtained_at"]) <= now

    lines = human.stdout.splitlines()
    assert "name: demo" in lines
    assert "state: connected" in lines
    assert f"member_id: {status['member_id']}" in lines
    assert not any(line.startswith("fix:") for line in lines)

    assert listing.stdout == f"demo\t{domain}\tconnected\n"


def clients(listing: subprocess.CompletedProcess[str]) -> list[list[str]]:
    assert listing.returncode == 0, listing.stderr
    return [line.split("\t") for line in listing.stdout.splitlines()]


def test_client_add_list_revoke(live: Live) -> None:
    added, unknown, bad_ip = run_all(
        (live.env, ["client", "add", "erp", "--portal", "demo"]),
        (live.env, ["client", "add", "nowhere", "--portal", "nope"]),
        (live.env, ["client", "add", "badip", "--portal", "demo", "--ip", "notacidr"]),
    )
    assert added.returncode == 0, added.stderr
    key = added.stdout.removesuffix("\n")
    # `KEY=$(b24gate client add erp --portal demo)`: the key and nothing else.
    assert re.fullmatch(r"b24_[A-Za-z0-9_-]+", key), added.stdout
    assert key not in added.stderr
    assert "not shown again" in added.stderr
    assert key.encode() not in store_bytes(live.data)  # only its hash is kept
    assert_error(unknown, "nope")
    assert_usage_error(bad_ip)
    assert "notacidr" in bad_ip.stderr

    answer = live.call(key, {"portal": "demo", "method": "crm.deal.list"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["success"] is True
    assert body["data"]["total"] == 3

    listed = clients(live.run("client", "list"))
    assert ["erp", "demo", "*", "active"] in listed
    # Neither failed `client add` left a half-made client behind.
    assert not {"nowhere", "badip"} & {row[0] for row in listed}

    revoked = live.run("client", "revoke", "erp")
    assert revoked.returncode == 0, revoked.stderr
    assert revoked.stdout == ""

    refused = live.call(key, {"portal": "demo", "method": "crm.deal.list"})
    assert refused.status_code == 401, refused.text
    assert refused.json()["code"] == "unauthorized"

    again, listing = run_all(
        (live.env, ["client", "revoke", "erp"]), (live.env, ["client", "list"])
    )
    assert_error(again, "erp")
    assert ["erp", "demo", "*", "revoked"] in clients(listing)
    assert key not in live.serve_log.read_text()


def test_call_from_the_shell(live: Live) -> None:
    done = live.run("call", "demo", "crm.deal.add", '{"fields":{"TITLE":"из CLI"}}')
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("\n") == 1
    answer = json.loads(done.stdout)
    assert isinstance(answer["result"], int)
    assert not isinstance(answer["result"], bool)
    assert "time" in answer

    bad_json, bad_method, unknown, not_object, read_back = run_all(
        (live.env, ["call", "demo", "crm.deal.add", '{"fields":']),
        (live.env, ["call", "demo", "crm.deal.add/../x", "{}"]),
        (live.env, ["call", "nope", "crm.deal.list"]),
        (live.env, ["call", "demo", "crm.deal.list", "[1, 2]"]),
        (live.env, ["call", "demo", "crm.deal.get", json.dumps({"id": answer["result"]})]),
    )
    assert_usage_error(bad_json)
    assert_usage_error(bad_method)
    assert_usage_error(not_object)
    assert_error(unknown, "nope")
    # The deal was made, its Cyrillic title intact; stdout is UTF-8 JSON, not \u escapes.
    assert read_back.returncode == 0, read_back.stderr
    assert '"TITLE": "из CLI"' in read_back.stdout
    assert json.loads(read_back.stdout)["result"]["TITLE"] == "из CLI"


@pytest.fixture
def redis_url() -> str:
    url = os.environ.get("B24GATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    client: Any = redis.Redis.from_url(url, socket_timeout=5)
    try:
        client.ping()
    except (OSError, redis.RedisError) as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"Redis not reachable: {exc}")
    finally:
        client.close()
    return url


def test_a_call_from_the_shell_waits_its_turn_in_the_portals_budget(
    live: Live, redis_url: str
) -> None:
    # The replicas of a gateway share each portal's budget in Redis. Another replica has
    # booked the budget of `demo` three seconds past what its bucket allows: a call from
    # the shell must wait for the next slot, and book it, not go around the queue.
    status = json.loads(live.run("portal", "status", "demo", "--json").stdout)
    bucket = f"b24gate:bucket:{status['member_id']}"
    rate, burst = 2.0, 50  # the portal's default budget (standard plan)
    ahead = (burst - 1) / rate + 3.0  # the limiter's tolerance, plus three seconds
    client: Any = redis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        seconds, micros = client.time()
        booked = seconds + micros / 1e6 + ahead
        client.set(bucket, repr(booked), px=int((ahead + 60) * 1000))
        started = time.monotonic()
        done = b24gate(
            {**live.env, "B24GATE_REDIS_URL": redis_url}, "call", "demo", "crm.deal.list"
        )
        took = time.monotonic() - started
        after = float(client.get(bucket))
    finally:
        client.delete(bucket)
        client.close()
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["total"] >= 3
    assert took >= 3.0
    # Its request took the next slot of the shared budget: one drain interval further.
    assert after == pytest.approx(booked + 1 / rate, abs=1e-3)


def test_db_upgrade(live: Live) -> None:
    done = live.run("db", "upgrade")
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""


# -- the master key --------------------------------------------------------------------


def test_a_foreign_or_exposed_master_key_is_one_clear_line(live: Live, tmp_path: Path) -> None:
    # `live` holds a store made under its generated key file.
    key_file = live.data / "master.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    other = base64.b64encode(secrets.token_bytes(32)).decode()
    foreign = {**live.env, "B24GATE_MASTER_KEY": other}
    exposed = tmp_path / "exposed.key"
    exposed.write_bytes(key_file.read_bytes())
    exposed.chmod(0o644)
    exposed_dir = tmp_path / "data"
    exposed_dir.mkdir(mode=0o700)
    (exposed_dir / "master.key").write_bytes(key_file.read_bytes())
    (exposed_dir / "master.key").chmod(0o644)

    listing, serve, by_env_file, in_data_dir = run_all(
        (foreign, ["portal", "list"]),
        (foreign, ["serve", "--port", str(free_port())]),
        ({**live.env, "B24GATE_MASTER_KEY_FILE": str(exposed)}, ["portal", "list"]),
        (environment(exposed_dir), ["portal", "list"]),
    )
    assert_error(listing, "the master key does not match this store")
    assert_error(serve, "the master key does not match this store")
    assert_error(by_env_file, "chmod 600", str(exposed))
    assert_error(in_data_dir, "chmod 600", str(exposed_dir / "master.key"))
    for done in (listing, serve, by_env_file, in_data_dir):
        assert other not in done.stderr
        assert key_file.read_text().strip() not in done.stderr
    assert not list(exposed_dir.glob("b24gate.db*"))  # refused before touching a store


# -- demo ------------------------------------------------------------------------------


def test_demo_prints_a_working_curl_and_a_1c_snippet_and_stops_on_sigterm(
    tmp_path: Path,
) -> None:
    port = free_port()
    env = environment(tmp_path / "data")
    with process(env, tmp_path / "demo.log", "demo", "--port", str(port)) as demo:
        assert demo.stdout is not None
        text = "".join(read_until(demo, lambda line: line.startswith("Сообщить(")))
        curl = re.search(
            rf"curl -s http://127\.0\.0\.1:{port}/api/v1/call \\\n"
            r"  -H 'Authorization: Bearer (b24_[A-Za-z0-9_-]+)' \\\n"
            r"  -H 'Content-Type: application/json' \\\n"
            r"  -d '(.+)'\n",
            text,
        )
        assert curl is not None, text
        key, payload = curl.group(1), json.loads(curl.group(2))
        assert "HTTPСоединение" in text
        assert f'HTTPСоединение("127.0.0.1", {port})' in text
        assert f'"Bearer {key}"' in text

        with httpx.Client(timeout=TIMEOUT) as http:
            answer = http.post(
                f"http://127.0.0.1:{port}/api/v1/call",
                json=payload,
                headers={"Authorization": f"Bearer {key}"},
            )
        assert answer.status_code == 200, answer.text
        data = answer.json()["data"]
        assert data["total"] == 25
        assert len(data["result"]) == 25
        assert data["result"][0]["ID"] == "1"

        # The admin page, and the token made for this run to sign in with.
        admin = "".join(read_until(demo, lambda line: line.startswith("# Admin page:")))
        found = re.search(
            rf"# Admin page: (http://127\.0\.0\.1:{port}/admin) "
            r"\(sign in with the admin token ([A-Za-z0-9_-]{20,})\)",
            admin,
        )
        assert found is not None, admin
        with httpx.Client(timeout=TIMEOUT) as browser:
            signed_in = browser.post(
                f"{found.group(1)}/sign-in",
                data={"token": found.group(2)},
                headers={"Origin": f"http://127.0.0.1:{port}"},
            )
            assert signed_in.status_code == 303, signed_in.text
            portals = browser.get(f"{found.group(1)}/portals")
        assert portals.status_code == 200
        assert "state-connected'>connected</span>" in portals.text

        started = time.monotonic()
        demo.send_signal(signal.SIGTERM)
        assert stop(demo) == 0, (tmp_path / "demo.log").read_text()
        assert time.monotonic() - started < 5
    log = (tmp_path / "demo.log").read_text()
    assert "Traceback" not in log
    assert key not in log


def test_demo_stops_cleanly_on_sigterm_right_after_printing(tmp_path: Path) -> None:
    # A script reads the snippet, then stops the demo: the signal must already be handled.
    env = environment(tmp_path / "data")
    with process(env, tmp_path / "demo.log", "demo", "--port", str(free_port())) as demo:
        read_until(demo, lambda line: line.startswith("Сообщить("))
        demo.send_signal(signal.SIGTERM)
        assert stop(demo) == 0, (tmp_path / "demo.log").read_text()


def test_portal_request_budget_by_plan_or_explicit_numbers(tmp_path: Path) -> None:
    env = environment(tmp_path / "data")
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET)
    added = b24gate(env, "portal", "add", "big", "--url", "https://big.bitrix24.ru",
                    "--client-id", "local.big", "--client-secret-file", str(secret_file),
                    "--plan", "enterprise")  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert "requests: 5/s, bucket 250" in b24gate(env, "portal", "status", "big").stdout
    changed = b24gate(env, "portal", "set", "big", "--rate", "0.5", "--burst", "10")
    assert changed.returncode == 0, changed.stderr
    status = b24gate(env, "portal", "status", "big")
    assert "requests: 0.5/s, bucket 10" in status.stdout
    assert "requests" not in b24gate(env, "portal", "status", "big", "--json").stdout
    off = b24gate(env, "portal", "set", "big", "--rate", "0")
    assert "requests: no limit" in b24gate(env, "portal", "status", "big").stdout, off.stderr
    for bad in (["--plan", "gold"], ["--plan", "standard", "--rate", "1"], ["--burst", "0"],
                ["--rate", "-1"], []):  # fmt: skip
        assert_usage_error(b24gate(env, "portal", "set", "big", *bad))


def test_url_key_form_only_for_clients_created_with_allow_url_key(live: Live) -> None:
    plain = live.run("client", "add", "plain", "--portal", "demo")
    hook = live.run("client", "add", "hook", "--portal", "demo", "--allow-url-key")
    assert plain.returncode == 0, plain.stderr
    assert hook.returncode == 0, hook.stderr
    refused = live.http.post(f"/rest/1/{plain.stdout.strip()}/profile.json")
    assert refused.status_code == 401
    assert refused.json()["error"] == "INVALID_CREDENTIALS"
    allowed = live.http.post(f"/rest/1/{hook.stdout.strip()}/profile.json")
    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["result"]["ID"] == "1"


def test_events_from_subscription_to_a_consumer(live: Live) -> None:
    """The administrator subscribes from the shell; a deal changed in the portal reaches a
    consumer through two separate processes (sandbox and serve)."""
    subscribed = live.run("events", "subscribe", "demo", "oncrmdealupdate", "ONCRMDEALADD")
    assert subscribed.returncode == 0, subscribed.stderr
    again = live.run("events", "subscribe", "demo", "ONCRMDEALUPDATE")  # bound already: fine
    assert again.returncode == 0, again.stderr
    listing = live.run("events", "list")
    assert "demo\tONCRMDEALUPDATE\tonline" in listing.stdout.splitlines()
    bad_name, bad_pattern, unknown = run_all(
        (live.env, ["events", "subscribe", "demo", "ON CRM"]),
        (live.env, ["client", "add", "ev-bad", "--portal", "demo", "--events", "ONCRM.DEAL"]),
        (live.env, ["events", "subscribe", "nope", "ONCRMDEALADD"]),
    )
    assert_usage_error(bad_name)
    assert_usage_error(bad_pattern)
    assert_error(unknown, "nope")
    added = live.run("client", "add", "ev", "--portal", "demo", "--events", "ONCRMDEAL*")
    assert added.returncode == 0, added.stderr
    key = added.stdout.strip()

    changed = httpx.post(
        f"{live.sandbox_url}/_sandbox/changes",
        json={"entity": "deal", "action": "update", "id": 1, "fields": {"TITLE": "из портала"}},
        timeout=TIMEOUT,
    )
    assert changed.status_code == 200, changed.text
    page = live.http.get(
        "/api/v1/events",
        params={"portal": "demo", "wait": 20},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert page.status_code == 200, page.text
    assert [(e["event"], e["data"]) for e in page.json()["events"]] == [
        ("ONCRMDEALUPDATE", {"FIELDS": {"ID": "1"}})
    ]
    gone = live.run("events", "unsubscribe", "demo", "ONCRMDEALUPDATE", "ONCRMDEALADD")
    assert gone.returncode == 0, gone.stderr
    assert "ONCRMDEALUPDATE" not in live.run("events", "list").stdout
