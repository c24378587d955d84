"""Jobs through the whole gateway: handed over at once, worked through in the background,
collected later; and the crash rule, with the work of a replica that died left behind in
the store as it would be (docs/jobs.md)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy as sa

from b24gate.store import JobCommand

from .conftest import MakeStack, Stack


def adds(n: int, tag: str = "d", start: int = 0) -> list[dict[str, Any]]:
    return [
        {
            "method": "crm.deal.add",
            "params": {"fields": {"TITLE": f"{tag}{i}", "ORIGIN_ID": f"{tag}{i}"}},
        }
        for i in range(start, start + n)
    ]


async def submit(
    stack: Stack, key: str, commands: list[dict[str, Any]], **extra: Any
) -> httpx.Response:
    return await stack.http.post(
        "/api/v1/jobs",
        json={"commands": commands, **extra},
        headers={"Authorization": f"Bearer {key}"},
    )


async def job(stack: Stack, key: str, job_id: str) -> dict[str, Any]:
    answer = await stack.http.get(
        f"/api/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {key}"}
    )
    assert answer.status_code == 200, answer.text
    view: dict[str, Any] = answer.json()["job"]
    return view


async def finished(stack: Stack, key: str, job_id: str, within: float = 30) -> dict[str, Any]:
    async with asyncio.timeout(within):
        while True:
            view = await job(stack, key, job_id)
            if view["state"] in ("done", "cancelled") and view["counts"]["sent"] == 0:
                return view
            await asyncio.sleep(0.05)


async def results(stack: Stack, key: str, job_id: str) -> list[dict[str, Any]]:
    """Every command's result, page by page as 1C reads them."""
    items: list[dict[str, Any]] = []
    after: int | None = -1
    while after is not None:
        page = await stack.http.get(
            f"/api/v1/jobs/{job_id}/results",
            params={"after": after, "limit": 100},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert page.status_code == 200, page.text
        items.extend(page.json()["items"])
        after = page.json()["next_after"]
    return items


async def deals(stack: Stack, origin: str | None = None) -> list[dict[str, Any]]:
    return [
        d
        for d in stack.sandbox.portal.tables["crm.deal"].records.values()
        if origin is None or d.get("ORIGIN_ID") == origin
    ]


async def connected(stack: Stack, **portal: Any) -> tuple[Stack, str]:
    """Portal `demo` (``portal``: its settings) connected, and a client key for it."""
    await stack.add_portal(**portal)
    page = await stack.connect()
    assert page.status_code == 200, page.text
    return stack, await stack.add_client()


@pytest.fixture
async def running(make_stack: MakeStack) -> tuple[Stack, str]:
    """A connected portal, a key, and the gateway's background work (the job runner) on."""
    stack, key = await connected(await make_stack())
    stack.gateway.start_background()
    return stack, key


async def test_a_job_is_answered_at_once_and_every_result_is_collected_in_order(
    running: tuple[Stack, str],
) -> None:
    stack, key = running
    answer = await submit(stack, key, adds(120))
    assert answer.status_code == 202, answer.text
    view = answer.json()["job"]
    assert view["total"] == 120
    assert view["state"] in ("queued", "running")
    done = await finished(stack, key, view["id"])
    assert done["state"] == "done"
    assert done["counts"]["ok"] == 120
    assert done["done"] == 120
    items = await results(stack, key, view["id"])
    assert [item["index"] for item in items] == list(range(120))
    assert all(item["state"] == "ok" for item in items)
    made = {d["ID"]: d["TITLE"] for d in await deals(stack)}
    # Each result is its own command's deal, in the order handed over.
    assert [made[str(item["result"])] for item in items] == [f"d{i}" for i in range(120)]
    # NDJSON: the same, one a line.
    stream = await stack.http.get(
        f"/api/v1/jobs/{view['id']}/results?format=ndjson",
        headers={"Authorization": f"Bearer {key}"},
    )
    lines = [orjson.loads(line) for line in stream.content.splitlines()]
    assert lines == items


async def test_a_job_is_its_clients_alone(running: tuple[Stack, str]) -> None:
    stack, key = running
    other = await stack.add_client("other")
    job_id = (await submit(stack, key, adds(3))).json()["job"]["id"]
    for path in (f"/api/v1/jobs/{job_id}", f"/api/v1/jobs/{job_id}/results"):
        seen = await stack.http.get(path, headers={"Authorization": f"Bearer {other}"})
        assert seen.status_code == 404
        assert seen.json()["code"] == "unknown_job"
    cancel = await stack.http.post(
        f"/api/v1/jobs/{job_id}/cancel", headers={"Authorization": f"Bearer {other}"}
    )
    assert cancel.status_code == 404
    assert (await finished(stack, key, job_id))["counts"]["ok"] == 3  # not cancelled
    nobody = await stack.http.get(f"/api/v1/jobs/{job_id}")
    assert nobody.status_code == 401


async def test_a_forbidden_command_refuses_the_whole_job_before_anything_runs(
    running: tuple[Stack, str],
) -> None:
    stack, _ = running
    limited = await stack.add_client("limited", methods=("crm.deal.add",))
    commands = [*adds(5), {"method": "crm.deal.delete", "params": {"id": 1}}]
    refused = await submit(stack, limited, commands)
    assert refused.status_code == 403
    assert refused.json()["code"] == "method_forbidden"
    await asyncio.sleep(0.3)
    assert await deals(stack) == []


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"commands": []}, "invalid_request"),
        ({"commands": [{"method": "crm.deal.add"}], "external_id": "a b"}, "invalid_request"),
        ({"commands": [{"method": "crm/../x"}]}, "invalid_method"),
        ({"commands": [{"method": "crm." + "x" * 300}]}, "invalid_method"),
        ({"commands": [{"method": "crm.deal.add", "params": []}]}, "invalid_request"),
    ],
)
async def test_a_bad_job_gets_a_clear_error(
    running: tuple[Stack, str], body: dict[str, Any], code: str
) -> None:
    stack, key = running
    answer = await stack.http.post(
        "/api/v1/jobs", json=body, headers={"Authorization": f"Bearer {key}"}
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["code"] == code


async def test_a_results_page_outside_the_job_is_refused(running: tuple[Stack, str]) -> None:
    stack, key = running
    job_id = (await submit(stack, key, adds(2))).json()["job"]["id"]
    for query in ("limit=0", "limit=5000", "after=x", "format=xml"):
        page = await stack.http.get(
            f"/api/v1/jobs/{job_id}/results?{query}", headers={"Authorization": f"Bearer {key}"}
        )
        assert page.status_code == 400, query
    missing = await stack.http.get(
        "/api/v1/jobs/nothere/results", headers={"Authorization": f"Bearer {key}"}
    )
    assert missing.status_code == 404


async def test_cancel_stops_what_was_not_sent(make_stack: MakeStack) -> None:
    # One request a second, one deal a request: most of the job is still waiting.
    stack, key = await connected(await make_stack({"rate": 1, "burst": 1}), rate=1, burst=1)
    stack.gateway.start_background()
    job_id = (await submit(stack, key, adds(400))).json()["job"]["id"]
    await asyncio.sleep(1.5)
    cancel = await stack.http.post(
        f"/api/v1/jobs/{job_id}/cancel", headers={"Authorization": f"Bearer {key}"}
    )
    assert cancel.status_code == 200
    done = await finished(stack, key, job_id)
    assert done["state"] == "cancelled"
    assert done["counts"]["cancelled"] > 0
    assert done["counts"]["ok"] + done["counts"]["cancelled"] == 400
    await asyncio.sleep(1.5)  # nothing more reaches the portal
    assert len(await deals(stack)) == done["counts"]["ok"]


async def left_behind(
    stack: Stack, key: str, commands: list[dict[str, Any]], sent: int, **extra: Any
) -> str:
    """A job whose first ``sent`` commands a replica that then died had sent: held by it,
    marked sent, its lease run out. No runner is on yet."""
    job_id: str = (await submit(stack, key, commands, **extra)).json()["job"]["id"]
    jobs = stack.gateway.store.jobs
    now = time.time()
    held: list[JobCommand] = await jobs.claim(
        job_id, holder="elsewhere:1:dead", now=now, lease=0.5, limit=sent
    )
    await jobs.mark_sent(job_id, [c.seq for c in held], holder="elsewhere:1:dead", now=now)
    await asyncio.sleep(0.6)
    return job_id


async def test_writes_a_dead_replica_sent_become_outcome_unknown_and_are_not_sent_again(
    make_stack: MakeStack,
) -> None:
    stack, key = await connected(await make_stack())
    job_id = await left_behind(stack, key, adds(10), sent=4)
    stack.gateway.start_background()
    done = await finished(stack, key, job_id)
    assert done["counts"] == {**done["counts"], "ok": 6, "outcome_unknown": 4}
    items = await results(stack, key, job_id)
    assert [i["state"] for i in items[:4]] == ["outcome_unknown"] * 4
    assert items[0]["error"]["code"] == "outcome_unknown"
    assert len(await deals(stack)) == 6  # the four were never sent again


async def test_reads_a_dead_replica_sent_are_simply_repeated(make_stack: MakeStack) -> None:
    stack, key = await connected(await make_stack())
    reads = [{"method": "crm.deal.list", "params": {"filter": {}}} for _ in range(3)]
    job_id = await left_behind(stack, key, reads, sent=3)
    stack.gateway.start_background()
    done = await finished(stack, key, job_id)
    assert done["counts"]["ok"] == 3
    assert done["counts"]["outcome_unknown"] == 0


async def test_the_external_id_settles_writes_a_dead_replica_sent(make_stack: MakeStack) -> None:
    stack, key = await connected(await make_stack(job_settle_after=0.5))
    # Of the three writes sent before the crash, the first reached Bitrix24 (its deal
    # exists), the others did not.
    job_id = await left_behind(stack, key, adds(6), sent=3, external_id="ORIGIN_ID")
    made = await stack.call(
        key,
        {"method": "crm.deal.add", "params": {"fields": {"TITLE": "d0", "ORIGIN_ID": "d0"}}},
    )
    stack.gateway.start_background()
    done = await finished(stack, key, job_id)
    assert done["counts"]["ok"] == 6
    assert done["counts"]["outcome_unknown"] == 0
    items = await results(stack, key, job_id)
    assert items[0]["result"] == made.json()["data"]["result"]
    assert items[0]["settled"] is True
    for i in range(6):
        assert len(await deals(stack, f"d{i}")) == 1  # nothing doubled, nothing lost


async def test_a_key_bound_to_addresses_runs_its_job_as_from_where_it_was_submitted(
    running: tuple[Stack, str],
) -> None:
    stack, _ = running
    bound = await stack.add_client("bound", ips=("127.0.0.1/32",))
    job_id = (await submit(stack, bound, adds(3))).json()["job"]["id"]
    done = await finished(stack, bound, job_id)
    assert done["counts"]["ok"] == 3


async def test_a_running_job_does_not_hold_up_its_clients_interactive_calls(
    make_stack: MakeStack,
) -> None:
    # Two requests a second: the job has a thousand commands queued at the scheduler.
    stack, key = await connected(await make_stack({"rate": 2, "burst": 2}), rate=2, burst=2)
    stack.gateway.start_background()
    job_id = (await submit(stack, key, adds(2000))).json()["job"]["id"]
    async with asyncio.timeout(10):
        while (await job(stack, key, job_id))["counts"]["ok"] == 0:  # noqa: ASYNC110 - the store
            await asyncio.sleep(0.05)
    started = time.monotonic()
    single = await stack.call(key, {"method": "profile"})
    waited = time.monotonic() - started
    assert single.status_code == 200
    # Served in turn with the job's requests (a drain interval or two), not after them.
    assert waited < 1.5
    await stack.http.post(
        f"/api/v1/jobs/{job_id}/cancel", headers={"Authorization": f"Bearer {key}"}
    )


async def test_a_job_resubmitted_with_its_idempotency_key_is_the_same_job(
    running: tuple[Stack, str],
) -> None:
    stack, key = running
    headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": "exchange-2026-12-06"}
    body = {"commands": adds(30)}
    first = await stack.http.post("/api/v1/jobs", json=body, headers=headers)
    again = await stack.http.post("/api/v1/jobs", json=body, headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["job"]["id"] == first.json()["job"]["id"]
    other = await stack.http.post("/api/v1/jobs", json={"commands": adds(31)}, headers=headers)
    assert other.status_code == 422
    assert other.json()["code"] == "idempotency_key_reused"
    await finished(stack, key, first.json()["job"]["id"])
    assert len(await deals(stack)) == 30  # one job's worth, not two


async def test_a_submission_cut_off_after_the_job_was_stored_finds_that_job(
    running: tuple[Stack, str],
) -> None:
    stack, key = running
    headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": "nightly-42"}
    body = {"commands": adds(20)}
    first = await stack.http.post("/api/v1/jobs", json=body, headers=headers)
    job_id = first.json()["job"]["id"]
    # The gateway stopped after storing the job and before keeping its answer: the key's
    # row is still `running`, its holder gone.
    async with stack.gateway.store._engine.begin() as conn:
        await conn.execute(
            sa.text(
                "UPDATE idempotency_keys SET state = 'running', response = NULL, "
                "holder = 'gone', lease_until = 0"
            )
        )
    again = await stack.http.post("/api/v1/jobs", json=body, headers=headers)
    assert again.status_code == 202, again.text
    assert again.json()["job"]["id"] == job_id
    await finished(stack, key, job_id)
    assert len(await deals(stack)) == 20


async def test_a_key_revoked_mid_job_sends_nothing_more(make_stack: MakeStack) -> None:
    stack, key = await connected(await make_stack({"rate": 2, "burst": 2}), rate=2, burst=2)
    stack.gateway.start_background()
    job_id = (await submit(stack, key, adds(600))).json()["job"]["id"]
    async with asyncio.timeout(10):
        while (await job(stack, key, job_id))["counts"]["ok"] == 0:  # noqa: ASYNC110 - the store
            await asyncio.sleep(0.05)
    assert await stack.gateway.store.revoke_client("erp")
    revoked_at = len(await deals(stack))
    info = None
    async with asyncio.timeout(30):
        while info is None or info.finished_at is None:
            await asyncio.sleep(0.1)
            info = await stack.gateway.store.jobs.get(job_id)
    # At most the request on its way at the revocation (50 deals) was made after it.
    made = len(await deals(stack))
    assert made - revoked_at <= 50
    assert info.counts["ok"] == made
    assert info.counts["error"] == 600 - made
    rows = await stack.gateway.store.jobs.results(job_id, after=599 - 1, limit=1)
    assert rows[0].result is not None
    assert rows[0].result["error"]["code"] == "forbidden"


async def test_a_request_refused_for_the_rate_limit_is_sent_again(
    running: tuple[Stack, str],
) -> None:
    """Bitrix24 refuses a request unexecuted (503 QUERY_LIMIT_EXCEEDED): its commands, marked
    sent already, go again and the job ends with each deal made once."""
    stack, key = running
    await stack.control.post("/_sandbox/faults", json={"kind": "503", "count": 2})
    job_id = (await submit(stack, key, adds(120))).json()["job"]["id"]
    view = await finished(stack, key, job_id)
    await stack.control.delete("/_sandbox/faults")
    assert view["counts"]["ok"] == 120
    for i, item in enumerate(await results(stack, key, job_id)):
        assert [d["ID"] for d in await deals(stack, f"d{i}")] == [str(item["result"])]
