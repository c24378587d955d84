"""The administrator's opt-in that lets an install event connect a never-connected portal,
as the `b24gate` command sets and shows it (a real process each time). Off by default."""

from __future__ import annotations

import json
from pathlib import Path

from tests.test_cli import SECRET, assert_usage_error, b24gate, environment, run_all


def test_connect_by_install_is_off_unless_the_administrator_says_so(tmp_path: Path) -> None:
    env = environment(tmp_path / "data")
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET)
    oauth = ["--client-id", "app.1", "--client-secret-file", str(secret_file)]
    plain, opted = run_all(
        (env, ["portal", "add", "plain", "--url", "https://plain.bitrix24.ru", *oauth]),
        (env, ["portal", "add", "opted", "--url", "https://opted.bitrix24.ru", *oauth,
               "--connect-by-install"]),
    )  # fmt: skip
    assert plain.returncode == 0, plain.stderr
    assert opted.returncode == 0, opted.stderr
    assert "or by installing the app" in opted.stderr
    assert "installing" not in plain.stderr

    plain_status, opted_status, as_json = run_all(
        (env, ["portal", "status", "plain"]),
        (env, ["portal", "status", "opted"]),
        (env, ["portal", "status", "opted", "--json"]),
    )
    assert "connect_by_install: False" in plain_status.stdout
    assert "connect_by_install: True" in opted_status.stdout
    assert "connect_by_install" not in json.loads(as_json.stdout)  # docs/design.md §3's keys only

    off = b24gate(env, "portal", "set", "opted", "--no-connect-by-install")
    assert off.returncode == 0, off.stderr
    assert "connect_by_install: False" in b24gate(env, "portal", "status", "opted").stdout
    on = b24gate(env, "portal", "set", "plain", "--connect-by-install")
    assert on.returncode == 0, on.stderr
    assert "connect_by_install: True" in b24gate(env, "portal", "status", "plain").stdout

    hook_file = tmp_path / "hook"
    hook_file.write_text("https://hook.bitrix24.ru/rest/1/abcdef0123456789/")
    assert_usage_error(
        b24gate(
            env,
            "portal",
            "add",
            "hook",
            "--webhook-url-file",
            str(hook_file),
            "--connect-by-install",
        )
    )
