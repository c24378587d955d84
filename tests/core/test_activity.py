"""A process's record of its clients' calls: cheap to take, bounded in a flood, written in
one batch."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from b24gate.core import Activity
from b24gate.store import Cipher, Client, Store
from tests.store.conftest import new_portal


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with await Store.open(f"sqlite:///{tmp_path}/b24gate.db", Cipher(os.urandom(32))) as s:
        yield s


async def _erp(store: Store) -> Client:
    await store.add_portal(new_portal())
    return await store.add_client("erp", "0123456789ab", "0" * 64, ["demo"])


def _refused(activity: Activity, client_id: int | None = None, status: int = 403) -> None:
    activity.seen(
        surface="api",
        status=status,
        code="method_forbidden" if status < 500 else "upstream_error",
        client_id=client_id,
        client="erp" if client_id else None,
        portal="demo",
        method="user.get",
        address="10.0.0.1",
    )


async def test_a_flood_of_refusals_keeps_at_most_a_buffer_between_two_writes(
    store: Store,
) -> None:
    activity = Activity(store, buffer=500)
    for _ in range(20_000):
        _refused(activity)
    assert activity.dropped == 19_500
    await activity.flush()
    assert len(await store.activity.refusals(limit=20_000)) == 500
    await activity.flush()  # nothing new: nothing written
    assert len(await store.activity.refusals(limit=20_000)) == 500


async def test_a_flood_without_a_key_does_not_push_out_a_clients_refusal(
    store: Store,
) -> None:
    erp = await _erp(store)
    activity = Activity(store, buffer=100)
    _refused(activity, erp.id)
    for _ in range(5_000):
        _refused(activity)  # no valid key: anyone's
    await activity.flush()
    assert len(await store.activity.refusals(client="erp")) == 1
    assert len(await store.activity.refusals(limit=20_000)) == 101


async def test_calls_and_errors_are_counted_per_client_and_hour(store: Store) -> None:
    client = await _erp(store)
    activity = Activity(store)
    for status in (200, 200, 403, 502):
        _refused(activity, client.id, status)
    (hour,) = await activity.usage(24)
    assert (hour.client_id, hour.calls, hour.errors) == (client.id, 4, 2)
    codes = [r.code for r in await store.activity.refusals()]
    assert codes == ["upstream_error", "method_forbidden"]


async def test_a_key_sent_where_a_method_goes_is_not_kept(store: Store) -> None:
    # `GET /rest/<key>` (the webhook URL without the user id, or the method): the path's
    # one segment is the method the frame records, and the call is refused unread.
    key = "b24_0123456789ab_" + "S3cr3t-_" * 5 + "xyz"
    activity = Activity(store)
    for method in (key, f"crm.deal.list/{key}", key[:40]):
        activity.seen(
            surface="rest",
            status=401,
            code="unauthorized",
            client_id=None,
            client=None,
            portal=key,
            method=method,
            address="10.0.0.1",
        )
    await activity.flush()
    kept = await store.activity.refusals()
    assert [r.method for r in kept] == [
        "b24_0123456789ab_***",
        "crm.deal.list/b24_0123456789ab_***",
        "b24_0123456789ab_***",
    ][::-1]
    assert {r.portal for r in kept} == {"b24_0123456789ab_***"}
