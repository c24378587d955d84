"""A real ``b24gate serve`` killed (SIGKILL) with a job's requests on their way, then started
again: nothing doubled, nothing lost, and what cannot be known is said (docs/jobs.md)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from b24gate.testing import free_port

from .conftest import MakeStack, Stack
from .test_jobs import adds, connected, deals, finished, results, submit


def start_serve(
    data_dir: Path, env_extra: dict[str, str], port: int | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """``b24gate serve`` on ``port`` (a free one by default); its URL."""
    port = port or free_port()
    env = {**os.environ, "B24GATE_DATA_DIR": str(data_dir), **env_extra}
    # Its log is kept beside its data, and shown when a test fails (see serve_logs).
    with (data_dir / f"serve-{port}.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "b24gate", "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    return proc, f"http://127.0.0.1:{port}"


@pytest.fixture(autouse=True)
def serve_logs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[None]:
    """The serve processes' logs, printed (and so shown by pytest) after a test."""
    yield
    for log in sorted(tmp_path.rglob("serve-*.log")):
        print(f"== {log.name}\n{log.read_text(errors='replace')[-20_000:]}")


async def ready(url: str, within: float = 30) -> None:
    async with asyncio.timeout(within), httpx.AsyncClient() as http:
        while True:
            try:
                if (await http.get(f"{url}/readyz", timeout=1)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)


async def sent_count(stack: Stack, job_id: str) -> int:
    view = await stack.gateway.store.jobs.get(job_id)
    assert view is not None
    return view.counts["sent"]


async def run_and_kill(stack: Stack, key: str, **extra: Any) -> tuple[str, int]:
    """A job of 600 deals, worked on by a serve process that is killed while requests are
    on their way; a new process finishes it. Returns the job id and the commands that were
    sent and unanswered at the kill."""
    # Each request takes 0.8 s at the portal: the kill finds some on their way.
    await stack.control.post("/_sandbox/latency", json={"request": 0.8})
    job_id: str = (await submit(stack, key, adds(600), **extra)).json()["job"]["id"]
    env = {"B24GATE_JOB_SETTLE_AFTER": "2"}
    proc, url = start_serve(stack.settings.data_dir, env)
    try:
        await ready(url)
        async with asyncio.timeout(30):
            while await sent_count(stack, job_id) == 0:  # noqa: ASYNC110 - another process writes it
                await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        in_flight = await sent_count(stack, job_id)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    await stack.control.post("/_sandbox/latency", json={"request": 0})
    again, url = start_serve(stack.settings.data_dir, env)
    try:
        await ready(url)
        await finished(stack, key, job_id, within=60)
    finally:
        again.terminate()
        again.wait(timeout=10)
    return job_id, in_flight


@pytest.fixture
async def portal(make_stack: MakeStack) -> tuple[Stack, str]:
    return await connected(await make_stack({"rate": 4, "burst": 4}), rate=4, burst=4)


async def test_a_killed_gateway_doubles_nothing_and_loses_nothing(
    portal: tuple[Stack, str],
) -> None:
    stack, key = portal
    started = time.monotonic()
    job_id, in_flight = await run_and_kill(stack, key)
    assert in_flight > 0, "the kill found no request on its way: the test proved nothing"
    items = await results(stack, key, job_id)
    states = [item["state"] for item in items]
    assert len(items) == 600
    assert set(states) <= {"ok", "outcome_unknown"}
    unknown = [item["index"] for item in items if item["state"] == "outcome_unknown"]
    # Exactly the commands on their way at the kill, never sent again.
    assert len(unknown) == in_flight
    for i, item in enumerate(items):
        made = await deals(stack, f"d{i}")
        assert len(made) <= 1  # nothing doubled
        if item["state"] == "ok":
            assert [d["ID"] for d in made] == [str(item["result"])]
    assert time.monotonic() - started < 90


async def test_with_an_external_id_every_write_is_settled_after_a_kill(
    portal: tuple[Stack, str],
) -> None:
    stack, key = portal
    job_id, in_flight = await run_and_kill(stack, key, external_id="ORIGIN_ID")
    assert in_flight > 0
    items = await results(stack, key, job_id)
    assert [item["state"] for item in items] == ["ok"] * 600
    for i, item in enumerate(items):
        made = await deals(stack, f"d{i}")
        assert [d["ID"] for d in made] == [str(item["result"])]  # one deal each
    assert any(item.get("settled") for item in items)
