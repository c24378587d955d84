"""Requests/s the sandbox serves for ``profile`` with its limits off, on one core.

The sandbox runs pinned to core 0, wrk (Debian's package, installed here if missing)
loads it from core 1 over loopback for a fixed time. Target: >= 3,000 requests/s, so the
sandbox is never the bottleneck of the gateway's benchmarks.

    python bench/sandbox_throughput.py [--seconds 5] [--connections 32]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _sandbox_proc import access_token, pinned, sandbox_process

TARGET = 3000.0


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    print("installing wrk (apt-get)…", file=sys.stderr)
    subprocess.run(["apt-get", "update", "-qq"], check=False, timeout=300)
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, timeout=300)
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("wrk is not available and could not be installed")
    return found


def run_wrk(
    wrk: str, url: str, token: str, seconds: int, connections: int
) -> tuple[float, int, int]:
    """Return requests/s, requests, and non-2xx answers."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        # The token travels in the POST body, as the gateway sends it.
        script.write(
            'wrk.method = "POST"\n'
            f'wrk.body = "auth={token}"\n'
            'wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"\n'
        )
    cmd = pinned([wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "-s", script.name, url], core=1)
    out = subprocess.run(
        cmd, capture_output=True, text=True, check=True, timeout=seconds + 60
    ).stdout
    Path(script.name).unlink()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rps, total, int(bad.group(1)) if bad else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    wrk = ensure_wrk()
    with sandbox_process("--rate", "0", core=0) as (base_url, secret):
        token = access_token(base_url, secret)
        url = f"{base_url}/rest/profile.json"
        run_wrk(wrk, url, token, 1, args.connections)  # warm-up
        rps, total, bad = run_wrk(wrk, url, token, args.seconds, args.connections)
    verdict = "ok" if rps >= TARGET and bad == 0 else "BELOW TARGET"
    print(f"{'what':<34}{'figure':>12}")
    print(f"{'profile requests/s (one core)':<34}{rps:>12,.0f}")
    print(f"{'requests in the run':<34}{total:>12,}")
    print(f"{'non-2xx answers':<34}{bad:>12,}")
    print(f"{'target requests/s':<34}{TARGET:>12,.0f}")
    print(f"verdict: {verdict}")
    return 0 if verdict == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
