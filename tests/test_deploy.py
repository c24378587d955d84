"""The production files (deploy/, compose.yaml, docs/deploy.md) hold only what the gateway
knows: real settings, real commands and options, units and configurations their own
tools accept, and limits that do not cut off what the gateway allows."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
import typer.main
import yaml

from b24gate.cli import app
from b24gate.settings import Settings, load_settings
from b24gate.testing import free_port
from tests.test_cli import b24gate

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
DOC = ROOT / "docs" / "deploy.md"
COMPOSE = ROOT / "compose.yaml"
UNITS = DEPLOY / "systemd"
NGINX = DEPLOY / "nginx" / "b24gate.conf"
ENV_EXAMPLE = DEPLOY / "b24gate.env.example"
INSTALLED_BINARY = "/opt/b24gate/venv/bin/b24gate"

# Read by load_settings() itself rather than being fields: the TOML file, the token's file.
NOT_FIELDS = {"B24GATE_CONFIG", "B24GATE_ADMIN_TOKEN_FILE"}
SETTING_NAMES = {f"B24GATE_{name.upper()}" for name in Settings.model_fields} | NOT_FIELDS


_SETTING = re.compile(r"\bB24GATE_[A-Z0-9_]+")
_FENCE = re.compile(r"^[ \t]*```[^\n]*\n(.*?)^[ \t]*```", re.MULTILINE | re.DOTALL)
_SPAN = re.compile(r"`([^`\n]+)`")
# `b24gate` where it runs: a word of its own (or a path's last part) followed by arguments.
_INVOCATION = re.compile(r"(?<![\w@.:-])b24gate((?:[ \t]+[^\s|;&<>()#]+)+)")
_COMMENT = re.compile(r"(?:^|(?<=\s))#.*$", re.MULTILINE)
_WORD = re.compile(r"[a-z][a-z-]*")


def _deploy_files() -> list[Path]:
    files = [p for p in DEPLOY.rglob("*") if p.is_file()]
    return [*files, COMPOSE, ROOT / "Dockerfile", DOC]


def _invocations(text: str) -> Iterator[list[str]]:
    """Each `b24gate ARGS…` in the code of a Markdown page or a unit's command lines."""
    code = [_COMMENT.sub("", block).replace("\\\n", " ") for block in _FENCE.findall(text)]
    prose = _FENCE.sub("", text)
    code += _SPAN.findall(prose.replace("\n", " "))
    for snippet in code:
        for match in _INVOCATION.finditer(snippet):
            args = match.group(1).split()
            if _WORD.fullmatch(args[0]):
                yield args


def _resolve(args: list[str]) -> tuple[tuple[str, ...], Any]:
    """The command path ``args`` names and its click command (None: no such command).

    Typer's click may be its own copy, so groups are told by their ``commands``."""
    command: Any = typer.main.get_command(app)
    path: list[str] = []
    rest = list(args)
    while hasattr(command, "commands") and rest and _WORD.fullmatch(rest[0]):
        sub = command.commands.get(rest[0])
        path.append(rest.pop(0))
        if sub is None:
            return tuple(path), None
        command = sub
    if hasattr(command, "commands"):
        return tuple(path), None  # a group alone runs nothing
    return tuple(path), command


def _check_invocation(args: list[str], where: str) -> None:
    path, command = _resolve(args)
    assert command is not None, f"{where}: `b24gate {' '.join(args)}`: no such command"
    options = {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
    for arg in args[len(path) :]:
        if arg.startswith("--"):
            name = arg.split("=", 1)[0]
            assert name in options, f"{where}: `b24gate {' '.join(path)}` has no {name}"


def test_every_setting_named_is_a_real_one() -> None:
    for file in _deploy_files():
        names = set(_SETTING.findall(file.read_text(encoding="utf-8")))
        assert names <= SETTING_NAMES, f"{file.relative_to(ROOT)}: {names - SETTING_NAMES}"


def test_every_command_in_the_page_and_the_units_exists_with_its_options() -> None:
    seen = []
    for args in _invocations(DOC.read_text(encoding="utf-8")):
        _check_invocation(args, "docs/deploy.md")
        seen.append(" ".join(args[:2]))
    # The page's steps, found (the parser has not gone blind).
    steps = ("db upgrade", "portal add", "portal authorize", "client add", "key rotate", "doctor")
    for step in steps:
        assert any(s.startswith(step) for s in seen), step
    for unit in UNITS.glob("*.service"):
        for line in unit.read_text(encoding="utf-8").splitlines():
            if line.startswith("ExecStart="):
                binary, *args = line.removeprefix("ExecStart=").split()
                assert binary == INSTALLED_BINARY
                _check_invocation(args, unit.name)


def test_the_page_links_to_files_that_exist() -> None:
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", DOC.read_text(encoding="utf-8")):
        if target.startswith("http"):
            continue
        path = (DOC.parent / target).resolve()
        assert path.exists(), target


def test_the_env_example_loads_as_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in [n for n in os.environ if n.startswith("B24GATE_")]:
        monkeypatch.delenv(name)
    values = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            # Plain NAME=value: systemd and the shell of b24gate-admin.sh read it alike.
            assert re.fullmatch(r"[A-Z0-9_]+", name)
            assert re.fullmatch(r"[^\s'\"$`\\]+", value)
            values[name] = value
    token = tmp_path / "admin.token"
    token.write_text("t0ken\n")
    values["B24GATE_ADMIN_TOKEN_FILE"] = str(token)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.public_url.startswith("https://")
    assert settings.database_url
    assert settings.database_url.startswith("postgresql://")
    assert settings.redis_url
    assert settings.master_key_file
    assert settings.trusted_proxies == ["127.0.0.1/32", "::1/128"]
    assert settings.admin_token is not None
    assert settings.admin_token.get_secret_value() == "t0ken"


def _nginx_size(value: str) -> int:
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    return int(value[:-1]) * units[value[-1].lower()] if value[-1].isalpha() else int(value)


def _default(setting: str) -> float:
    value = Settings.model_fields[setting].default
    assert isinstance(value, int | float)
    return value


def test_nginx_lets_through_what_the_gateway_allows() -> None:
    conf = NGINX.read_text(encoding="utf-8")
    sizes = [_nginx_size(v) for v in re.findall(r"client_max_body_size (\w+);", conf)]
    # The server's own limit is above B24GATE_BODY_LIMIT (the gateway answers 413 itself)
    # and the jobs route's above B24GATE_JOB_BODY_LIMIT.
    assert min(sizes) > _default("body_limit")
    assert max(sizes) > _default("job_body_limit")
    jobs = conf[conf.index("location = /api/v1/jobs") :]
    assert _nginx_size(re.findall(r"client_max_body_size (\w+);", jobs)[0]) == max(sizes)
    # A call may wait its turn and then Bitrix24's answer; a long poll of events waits 60 s.
    timeout = int(re.findall(r"proxy_read_timeout (\d+)s;", conf)[0])
    assert timeout > _default("queue_max_wait") + _default("upstream_timeout") + 60
    # X-Forwarded-For is set by nginx, which the env example trusts.
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in conf


def _compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def test_compose_services_are_whole_and_hold_no_secret() -> None:
    compose = _compose()
    services: dict[str, dict[str, Any]] = compose["services"]
    declared_secrets = set(compose.get("secrets", {}))
    for name, service in services.items():
        assert "image" in service or "build" in service, name
        for target in service.get("depends_on", {}):
            assert target in services, f"{name} depends on {target}"
        assert set(service.get("secrets", [])) <= declared_secrets, name
        environment = service.get("environment", {})
        for variable in (v for v in environment if v.startswith("B24GATE_")):
            assert variable in SETTING_NAMES, f"{name}: {variable}"
        # Secrets come as files, never as values in the file.
        assert not {"B24GATE_MASTER_KEY", "B24GATE_ADMIN_TOKEN"} & set(environment), name
    for secret in compose["secrets"].values():
        assert secret["file"].startswith("./secrets/")
    assert "/secrets/" in (ROOT / ".gitignore").read_text(encoding="utf-8").split()

    gateways = {n: s for n, s in services.items() if s.get("image") == "b24gate:local"}
    assert gateways["migrate"]["command"] == ["db", "upgrade"]
    replicas = {n: s for n, s in gateways.items() if n != "migrate"}
    assert len(replicas) >= 2
    for name, replica in replicas.items():
        assert replica["depends_on"]["migrate"] == {
            "condition": "service_completed_successfully"
        }, name
        assert replica["environment"]["B24GATE_MASTER_KEY_FILE"].startswith("/run/secrets/")
    # The host's nginx fronts the published ports unchanged.
    published = {p.split(":")[1] for r in replicas.values() for p in r["ports"]}
    upstream = set(re.findall(r"server 127\.0\.0\.1:(\d+)", NGINX.read_text(encoding="utf-8")))
    assert published == upstream


def _tool(name: str, package: str) -> str:
    """A program the check needs: skipped where it is missing, except in CI (``CI`` set),
    where .ci/run installs ``package`` and a missing program fails."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if found is None:
        if os.environ.get("CI"):
            raise RuntimeError(f"{name} is missing: .ci/run installs Debian's {package}")
        pytest.skip(f"{name} is not installed (apt-get install {package})")
    return found


def test_compose_passes_docker_compose_config(tmp_path: Path) -> None:
    tool = _tool("docker-compose", "docker-compose")
    env = {
        "PATH": os.environ["PATH"],
        "POSTGRES_PASSWORD": "not-a-secret",
        "B24GATE_PUBLIC_URL": "https://gate.example.com",
    }
    command = [tool, "--project-directory", str(ROOT), "-f", str(COMPOSE), "config", "-q"]

    def config() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            command, capture_output=True, text=True, env=env, cwd=tmp_path, check=False, timeout=60
        )

    run = config()
    assert run.returncode == 0, run.stderr
    # Without the password it refuses to start rather than use an empty one.
    del env["POSTGRES_PASSWORD"]
    run = config()
    assert run.returncode != 0
    assert "POSTGRES_PASSWORD" in run.stderr


def test_systemd_accepts_the_units(tmp_path: Path) -> None:
    tool = _tool("systemd-analyze", "systemd")
    # The units name the installed command; verify checks it is executable, so point them
    # at this one.
    binary = shutil.which("b24gate")
    assert binary is not None
    for unit in UNITS.iterdir():
        text = unit.read_text(encoding="utf-8").replace(INSTALLED_BINARY, binary)
        (tmp_path / unit.name).write_text(text, encoding="utf-8")
    names = ["b24gate@8081.service", "b24gate-doctor.service", "b24gate-doctor.timer"]
    run = subprocess.run(
        [tool, "verify", *(f"./{n}" for n in names)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
        timeout=60,
    )
    # An unknown or misspelt directive is only a warning: any output fails.
    assert run.returncode == 0, run.stderr
    assert (run.stdout + run.stderr).strip() == ""


def test_nginx_accepts_the_configuration(tmp_path: Path) -> None:
    tool = _tool("nginx", "nginx-light")
    cert = trustme.CA().issue_cert("gate.example.com")
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    (tmp_path / "logs").mkdir()
    conf = (
        NGINX.read_text(encoding="utf-8")
        .replace("/etc/letsencrypt/live/gate.example.com/fullchain.pem", str(tmp_path / "cert.pem"))
        .replace("/etc/letsencrypt/live/gate.example.com/privkey.pem", str(tmp_path / "key.pem"))
        .replace("/var/log/nginx/", f"{tmp_path}/logs/")
    )
    (tmp_path / "b24gate.conf").write_text(conf, encoding="utf-8")
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log stderr;\nevents {{}}\n"
        f"http {{\n    include {tmp_path}/b24gate.conf;\n}}\n",
        encoding="utf-8",
    )
    run = subprocess.run(
        [tool, "-t", "-q", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr


def test_nginx_access_log_holds_no_client_key_or_event_secret(tmp_path: Path) -> None:
    tool = _tool("nginx", "nginx-light")
    conf = NGINX.read_text(encoding="utf-8")
    # The file's own map and log format, in front of a server that answers every path.
    logging = conf[conf.index("map $uri") : conf.index("server {")]
    port = free_port()
    for temp in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp_path / temp).mkdir()
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\ndaemon off;\n"
        "events {}\nhttp {\n"
        + "".join(
            f"    {t}_temp_path {tmp_path}/{t};\n" for t in ("proxy", "fastcgi", "uwsgi", "scgi")
        )
        + f"    client_body_temp_path {tmp_path}/body;\n{logging}"
        f"    server {{\n        listen 127.0.0.1:{port};\n"
        f"        access_log {tmp_path}/access.log b24gate;\n"
        "        location / { return 200; }\n    }\n}\n",
        encoding="utf-8",
    )
    secret = "k3y0fAcl1entS3cret"
    paths = [
        f"/rest/1/{secret}/crm.deal.list",
        f"/portals/main/rest/1/{secret}/crm.deal.list",
        f"/portals/main/rest/api/1/{secret}/crm.item.list",
        f"/rest/profile?auth={secret}",
        f"/portals/main/rest/profile?auth={secret}",
        f"/bitrix/events/{secret}",
        f"/%72est/1/{secret}/profile",
    ]
    server = subprocess.Popen(
        [tool, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for path in paths:
            for _ in range(100):
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5):
                        break
                except ConnectionRefusedError:
                    time.sleep(0.05)
                except urllib.error.URLError as exc:
                    if not isinstance(exc.reason, ConnectionRefusedError):
                        raise
                    time.sleep(0.05)
    finally:
        server.terminate()
        server.wait(timeout=10)
    log = (tmp_path / "access.log").read_text(encoding="utf-8")
    assert len(log.splitlines()) == len(paths), (tmp_path / "error.log").read_text()
    assert secret not in log
    # The route stays readable: which portal, and that it was the REST entrance.
    assert "/portals/main/rest/***" in log
    assert "/bitrix/events/***" in log


def test_the_admin_command_runs_under_crons_path() -> None:
    # docs/deploy.md runs /usr/local/sbin/b24gate from cron, whose PATH is /usr/bin:/bin;
    # Debian keeps runuser in /usr/sbin.
    script = (DEPLOY / "b24gate-admin.sh").read_text(encoding="utf-8")
    (program,) = re.findall(r"^exec (\S+)", script, re.MULTILINE)
    if not program.startswith("/"):
        assert shutil.which(program, path="/usr/bin:/bin"), f"{program} is not on cron's PATH"
    elif shutil.which("runuser"):
        assert os.access(program, os.X_OK), program


def _b24gate(env: dict[str, str], *args: str) -> str:
    done = b24gate(env, *args)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _wait_for(url: str, verify: ssl.SSLContext | bool = True) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(url, timeout=5, verify=verify)
            return
        except httpx.TransportError:
            assert time.monotonic() < deadline, f"{url} never answered"
            time.sleep(0.1)


def _nginx_in_front(tmp_path: Path, upstream: int, https: int, http: int) -> tuple[Path, Path]:
    """deploy/nginx/b24gate.conf as written, but for its certificate, log and temporary
    paths, its ports (loopback) and its upstream (one replica on ``upstream``)."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "gate.example.com")
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    conf = NGINX.read_text(encoding="utf-8")
    conf = re.sub(r"(?m)^\s*server 127\.0\.0\.1:808[23] .*\n", "", conf)
    conf = re.sub(r"(?m)^\s*listen \[::\]:\d+.*\n", "", conf)
    conf = (
        conf.replace("127.0.0.1:8081", f"127.0.0.1:{upstream}")
        .replace("listen 80;", f"listen 127.0.0.1:{http};")
        .replace("listen 443 ssl", f"listen 127.0.0.1:{https} ssl")
        .replace("/etc/letsencrypt/live/gate.example.com/fullchain.pem", str(tmp_path / "cert.pem"))
        .replace("/etc/letsencrypt/live/gate.example.com/privkey.pem", str(tmp_path / "key.pem"))
        .replace("/var/log/nginx/", f"{tmp_path}/")
    )
    (tmp_path / "b24gate.conf").write_text(conf, encoding="utf-8")
    temps = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    for temp in temps:
        (tmp_path / temp).mkdir()
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\ndaemon off;\n"
        "events {}\nhttp {\n"
        + "".join(f"    {t}_temp_path {tmp_path}/{t};\n" for t in temps)
        + f"    include {tmp_path}/b24gate.conf;\n}}\n",
        encoding="utf-8",
    )
    return tmp_path / "nginx.conf", tmp_path / "ca.pem"


def test_behind_the_documented_nginx_the_gateway_sees_the_callers_address(
    tmp_path: Path,
) -> None:
    # The deployment drill: the env example's trusted proxies, the nginx file in front, a
    # real `b24gate serve` behind. A key limited to an address is judged by the address
    # nginx saw, and an X-Forwarded-For the caller made up changes nothing.
    tool = _tool("nginx", "nginx-light")
    upstream, https, http = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("B24GATE_")}
    env |= {
        "B24GATE_DATA_DIR": str(tmp_path / "data"),
        "B24GATE_PUBLIC_URL": f"https://127.0.0.1:{https}",
        "B24GATE_TRUSTED_PROXIES": "127.0.0.1/32,::1/128",
    }
    secret = tmp_path / "secret"
    secret.write_text("an-application-secret-of-the-drill-0123456789")
    _b24gate(env, "portal", "add", "main", "--url", "https://company.bitrix24.ru",
             "--client-id", "local.app", "--client-secret-file", str(secret))  # fmt: skip
    here = _b24gate(env, "client", "add", "here", "--portal", "main", "--ip", "127.0.0.1/32")
    far = _b24gate(env, "client", "add", "far", "--portal", "main", "--ip", "10.9.9.9/32")
    conf, ca = _nginx_in_front(tmp_path, upstream, https, http)
    context = ssl.create_default_context(cafile=str(ca))
    with contextlib.ExitStack() as stack:
        for command in (
            [sys.executable, "-m", "b24gate", "serve", "--port", str(upstream)],
            [tool, "-p", str(tmp_path), "-c", str(conf)],
        ):
            proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)  # fmt: skip
            stack.callback(proc.wait, 10)
            stack.callback(proc.terminate)
        _wait_for(f"http://127.0.0.1:{upstream}/healthz")
        _wait_for(f"https://127.0.0.1:{https}/healthz", context)

        def call(key: str, forwarded: str | None = None) -> tuple[int, str]:
            answer = httpx.post(
                f"https://127.0.0.1:{https}/api/v1/call",
                json={"portal": "main", "method": "crm.deal.list"},
                headers={
                    "Authorization": f"Bearer {key}",
                    **({"X-Forwarded-For": forwarded} if forwarded else {}),
                },
                timeout=30,
                verify=context,
            )
            return answer.status_code, answer.json().get("code", "")

        # Past the address rule (the portal was never authorized: 409, not 403).
        assert call(here) == (409, "needs_authorization")
        assert call(here, forwarded="10.9.9.9") == (409, "needs_authorization")
        assert call(far) == (403, "ip_forbidden")
        assert call(far, forwarded="10.9.9.9") == (403, "ip_forbidden")
        ready = httpx.get(f"https://127.0.0.1:{https}/readyz", timeout=10, verify=context)
        assert ready.status_code == 200
        assert ready.headers["Strict-Transport-Security"] == "max-age=63072000"
        plain = httpx.get(f"http://127.0.0.1:{http}/api/v1/call", timeout=10)
        assert plain.status_code == 301
        assert plain.headers["Location"] == "https://127.0.0.1/api/v1/call"
