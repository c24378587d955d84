"""What the admin page reads of clients' calls: refusals kept with their codes and pruned
by age and count, and hourly counts summed over the replicas that flushed them."""

from __future__ import annotations

import time

from b24gate.store import Refusal, Store

from .conftest import new_portal


async def _client(store: Store, name: str = "erp") -> int:
    if await store.portal("demo") is None:
        await store.add_portal(new_portal())
    client = await store.add_client(name, f"k{name:0>11}"[:12], "0" * 64, ["demo"])
    return client.id


async def test_refusals_are_kept_newest_first_and_filtered(store: Store) -> None:
    now = time.time()
    rows = [
        Refusal(now, "method_forbidden", 403, "api", "erp", "demo", "user.get", "10.0.0.1"),
        Refusal(now + 1, "unauthorized", 401, "rest", None, None, "crm.deal.add", "10.0.0.2"),
        Refusal(now + 2, "method_forbidden", 403, "api", "other", "demo", "task.add", None),
    ]
    await store.activity.add(rows, {})
    assert [r.at for r in await store.activity.refusals()] == [now + 2, now + 1, now]
    forbidden = await store.activity.refusals(code="method_forbidden", client="erp")
    assert forbidden == [rows[0]]
    assert await store.activity.refusals(portal="elsewhere") == []


async def test_long_values_are_cut_to_their_columns(store: Store) -> None:
    await store.activity.add(
        [Refusal(time.time(), "x" * 100, 400, "api", "c" * 80, "p" * 80, "m" * 300, "a" * 100)],
        {},
    )
    (row,) = await store.activity.refusals()
    assert (len(row.code), len(row.method or ""), len(row.address or "")) == (64, 100, 64)
    assert row.method is not None
    assert row.method.endswith("…")


async def test_pruning_keeps_the_newest_rows_within_the_age(store: Store) -> None:
    now = time.time()
    old = [Refusal(now - 8 * 86400, "unauthorized", 401, "api")]
    # Written as they happen, oldest first.
    recent = [
        Refusal(now - i, "unauthorized", 401, "api", method=f"m{i}") for i in range(29, -1, -1)
    ]
    await store.activity.add(old + recent, {})
    gone = await store.activity.prune(before=now - 7 * 86400, keep=10, hours_before=0)
    assert gone == 21
    kept = await store.activity.refusals()
    assert [r.method for r in kept] == [f"m{i}" for i in range(10)]


async def test_a_flood_without_a_key_does_not_push_out_the_clients_refusals(
    store: Store,
) -> None:
    # Anyone can send calls with no valid key; the refusals of the gateway's own clients
    # are kept by a count of their own.
    now = time.time()
    mine = [Refusal(now - 100, "method_forbidden", 403, "api", "erp", "demo", "user.get")]
    flood = [Refusal(now - 50 + i / 100, "unauthorized", 401, "rest") for i in range(50)]
    await store.activity.add(mine + flood, {})
    gone = await store.activity.prune(before=now - 7 * 86400, keep=10, hours_before=0)
    assert gone == 40
    assert await store.activity.refusals(client="erp") == mine
    assert len(await store.activity.refusals(code="unauthorized")) == 10


async def test_hours_are_summed_over_flushes_and_replicas(store: Store) -> None:
    erp, other = await _client(store, "erp"), await _client(store, "other")
    hour = int(time.time() // 3600)
    await store.activity.add([], {(erp, hour): (3, 1, 100.0), (other, hour - 1): (1, 0, 50.0)})
    await store.activity.add([], {(erp, hour): (2, 2, 90.0)})  # another replica, earlier
    usage = {(u.client_id, u.hour): u for u in await store.activity.usage(hour - 5)}
    assert (usage[(erp, hour)].calls, usage[(erp, hour)].errors) == (5, 3)
    assert usage[(erp, hour)].last_used == 100.0
    assert [u.client_id for u in await store.activity.usage(hour)] == [erp]
    assert await store.activity.last_used() == {erp: 100.0, other: 50.0}
    await store.activity.prune(before=0, keep=10, hours_before=hour * 3600)
    assert [u.client_id for u in await store.activity.usage(0)] == [erp]


async def test_text_a_database_cannot_hold_is_written_escaped(store: Store) -> None:
    # Whoever calls `/rest/%00…` without a key chooses the method; a key's holder chooses
    # the portal name too. A NUL (which PostgreSQL refuses in text) or a lone surrogate
    # (which neither driver can encode) must not lose the batch it came in, with every
    # other refusal and every client's counts of that second.
    erp = await _client(store)
    hour = int(time.time() // 3600)
    hostile = Refusal(
        time.time(), "unauthorized", 401, "rest", None, "p\x00", "a\x00b\x1b[2J\x85\ud800c", "::1"
    )
    honest = Refusal(time.time(), "method_forbidden", 403, "api", "erp", "demo", "user.get")
    await store.activity.add([hostile, honest], {(erp, hour): (2, 2, 1.0)})
    kept = await store.activity.refusals()
    assert [r.method for r in kept] == ["user.get", "a\\x00b\\x1b[2J\\x85\\ud800c"]
    assert kept[1].portal == "p\\x00"
    assert [(u.calls, u.errors) for u in await store.activity.usage(hour)] == [(2, 2)]
    # The page's filter finds the row by the text it shows, and a filter holding a NUL
    # is a question, not an error.
    assert await store.activity.refusals(portal="p\\x00") == [kept[1]]
    assert await store.activity.refusals(portal="p\x00") == [kept[1]]
