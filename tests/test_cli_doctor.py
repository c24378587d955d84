"""`b24gate doctor` as an administrator and a monitor run it: a real process each time.

Human output sorted by severity with a summary line; `--json` for monitoring; exit 1 while a
finding is high, 0 once the fix it names is applied; never a secret, never a traceback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from b24gate.testing import free_port
from tests.core.test_doctor import self_signed
from tests.test_cli import assert_usage_error, b24gate, environment, run_all

ADMIN_TOKEN = "q7Vd0mXr2Lk9sPz4Wb8Yc1Nf6Hj3Tg5Ue0Ia7Ro2Eh="
SECRET = "cli-doctor-app-secret-Zq8vW3xK1mN5pR7"


def report(done: Any) -> dict[str, Any]:
    assert "Traceback" not in done.stderr, done.stderr
    parsed: dict[str, Any] = json.loads(done.stdout)
    return parsed


def codes(done: Any) -> list[str]:
    return [f["code"] for f in report(done)["findings"]]


def test_a_key_readable_by_others_fails_until_chmod_600(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    env = environment(data_dir, B24GATE_ADMIN_TOKEN=ADMIN_TOKEN)
    assert b24gate(env, "db", "upgrade").returncode == 0

    clean = b24gate(env, "doctor")
    assert (clean.returncode, clean.stdout.strip()) == (0, "no findings"), clean.stderr

    key = data_dir / "master.key"
    key.chmod(0o644)
    text, as_json = run_all((env, ["doctor"]), (env, ["doctor", "--json"]))
    assert text.returncode == 1
    lines = text.stdout.splitlines()
    # Most severe first, each with its fix, and a summary line last.
    assert lines[0] == "HIGH    key_file_mode: the master key file is readable by group or others"
    assert f"        fix: chmod 600 {key}" in lines
    assert lines[-1].startswith("2 findings: 2 high, 0 medium, 0 low, 0 info")
    assert as_json.returncode == 1
    parsed = report(as_json)
    assert parsed["ok"] is False
    assert parsed["counts"] == {"high": 2, "medium": 0, "low": 0, "info": 0}
    assert [f["code"] for f in parsed["findings"]] == ["key_file_mode", "store_unreadable"]
    assert set(parsed["findings"][0]) == {"code", "severity", "title", "detail", "fix"}

    key.chmod(0o600)
    fixed = b24gate(env, "doctor", "--json")
    assert fixed.returncode == 0
    assert report(fixed) == {
        "findings": [],
        "counts": {"high": 0, "medium": 0, "low": 0, "info": 0},
        "ok": True,
    }


def test_no_secret_is_ever_printed(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET)
    weak = "hunter2-weak-admin"
    env = environment(tmp_path / "var", B24GATE_ADMIN_TOKEN=weak)
    common = ["--client-id", "local.1", "--client-secret-file", str(secret_file)]
    added = b24gate(env, "portal", "add", "main", "--url", "https://main.bitrix24.ru", *common)
    assert added.returncode == 0, added.stderr
    issued = b24gate(env, "client", "add", "1c", "--portal", "main", "--allow-url-key")
    assert issued.returncode == 0, issued.stderr
    client_key = issued.stdout.strip()

    text, as_json = run_all((env, ["doctor"]), (env, ["doctor", "--json"]))
    assert (text.returncode, as_json.returncode) == (1, 1)
    assert {"admin_token_weak", "client_wildcard_methods", "client_url_key"} <= set(codes(as_json))
    for done in (text, as_json):
        for secret in (weak, client_key, client_key.rsplit("_", 1)[-1], SECRET):
            assert secret not in done.stdout + done.stderr


def test_an_unreachable_database_and_redis_are_findings_not_a_traceback(tmp_path: Path) -> None:
    port = free_port()
    env = environment(
        tmp_path / "var",
        B24GATE_ADMIN_TOKEN=ADMIN_TOKEN,
        B24GATE_DATABASE_URL=f"postgresql://gw:pg-Secret-Zq8@127.0.0.1:{port}/b24gate",
        B24GATE_REDIS_URL=f"redis://127.0.0.1:{port}/0",
    )
    done = b24gate(env, "doctor", "--json")
    assert done.returncode == 1
    assert sorted(codes(done)) == ["database_unreachable", "redis_unreachable"]
    assert "pg-Secret-Zq8" not in done.stdout


def test_a_certificate_expiring_in_three_days_is_high(tmp_path: Path) -> None:
    env = environment(tmp_path / "var", B24GATE_ADMIN_TOKEN=ADMIN_TOKEN)
    assert b24gate(env, "db", "upgrade").returncode == 0
    soon = self_signed(tmp_path / "soon.pem", 3)
    later = self_signed(tmp_path / "later.pem", 90)
    expiring, fine, bogus = run_all(
        (env, ["doctor", "--json", "--tls-cert", str(soon)]),
        (env, ["doctor", "--json", "--tls-cert", str(later)]),
        (env, ["doctor", "--no-such-option"]),
    )
    assert expiring.returncode == 1
    [finding] = report(expiring)["findings"]
    assert (finding["code"], finding["severity"]) == ("tls_certificate_expiring", "high")
    assert str(soon) in finding["detail"]
    assert (fine.returncode, report(fine)["ok"]) == (0, True)
    assert_usage_error(bogus)
