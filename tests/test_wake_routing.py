"""Several groups of workers (machines) on one database: one notification wakes one group.

The rules (zart.wake_routing) as properties, then real workers: groups that share the notifications,
and a full group that hands them on, so that work never waits for a poll while a machine has room.
"""

from __future__ import annotations

import logging
import re

import trio
from hypothesis import given, settings
from hypothesis import strategies as st

import zart
from tests.apps import core_app as app
from zart import sql
from zart.wake_routing import FORWARD_SECONDS, GROUPS_CHANGED, Forwarder, WakeRouter, ranking

from .helpers import SupervisorProcess, query, scalar, wait_until, worker_env

APP = "tests.apps.core_app"

names = st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=8, unique=True)
keys = st.integers(min_value=1, max_value=2**63).map(str)


def _routers(groups: list[str], room: dict[str, bool]) -> list[WakeRouter]:
    routers = [WakeRouter(group, lambda group=group: room[group]) for group in groups]
    for router in routers:
        router.set_groups(groups)
    return routers


@settings(max_examples=60, deadline=None)
@given(names, keys)
def test_a_keyed_notification_wakes_exactly_one_group_when_all_have_room(groups, key):
    routers = _routers(groups, dict.fromkeys(groups, True))
    woken = [router.me for router in routers if router.hear(key) == (True, None)]
    assert woken == [ranking(key, groups)[0]]


@settings(max_examples=60, deadline=None)
@given(names, keys, st.data())
def test_a_notification_goes_on_through_full_groups_to_the_first_with_room(groups, key, data):
    room = {group: data.draw(st.booleans(), label=group) for group in groups}
    routers = {router.me: router for router in _routers(groups, room)}
    payload, visited = key, []
    while payload is not None:
        acting = [(me, *router.hear(payload)) for me, router in routers.items()]
        acting = [entry for entry in acting if entry[1]]
        assert len(acting) == 1, "every payload on the way wakes one group"
        me, _, payload = acting[0]
        visited.append(me)
    order = ranking(key, groups)
    with_room = [group for group in order if room[group]]
    # It stops at the first group with room, or at the last group when none has room.
    assert visited == order[: order.index(with_room[0]) + 1] if with_room else order


def test_the_empty_payload_wakes_every_group_and_groups_changed_wakes_none():
    routers = _routers(["a", "b", "c"], {"a": True, "b": False, "c": True})
    assert all(router.hear("") == (True, None) for router in routers)
    assert all(router.hear(GROUPS_CHANGED) == (False, None) for router in routers)
    assert all(router.stale for router in routers)
    assert sql.GROUPS_CHANGED == GROUPS_CHANGED and sql.WAKE_EVERY_GROUP == ""
    # Anything unknown (a payload of a newer version) wakes, never strands work.
    assert all(router.hear("12/x")[0] for router in routers)


def test_a_group_alone_in_its_list_acts_on_every_key():
    router = WakeRouter("only", lambda: True)  # before it has read the groups
    assert all(router.hear(str(key)) == (True, None) for key in range(50))


def test_the_forwarder_sends_the_first_at_once_then_the_latest_once_per_interval():
    sent: list[tuple[float, str]] = []

    async def main() -> None:
        async def send(payload: str) -> None:
            sent.append((trio.current_time(), payload))

        forwarder = Forwarder(send)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(forwarder.run)
            began = trio.current_time()
            for n in range(10):
                forwarder.offer(f"{n}/1")
                await trio.sleep(FORWARD_SECONDS / 10)
            await trio.sleep(FORWARD_SECONDS * 3)
            nursery.cancel_scope.cancel()
        assert [payload for _, payload in sent] == ["0/1", "9/1"]
        assert sent[1][0] - began >= FORWARD_SECONDS

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_a_full_worker_hands_notifications_to_one_with_room(
    fresh_database_url, monkeypatch, tmp_path, caplog
):
    """Two workers, each a group of its own, polling only every minute: one is full (its one slot
    holds a gated step). Every workflow started one at a time still runs within seconds, those
    whose notification went to the full worker included: it handed them on."""
    url = fresh_database_url
    monkeypatch.setenv("ZART_TEST_EFFECTS_URL", url)
    caplog.set_level(logging.INFO)
    gate = tmp_path / "gate"
    options = {"concurrency": 1, "poll_interval": "60s", "lease": "10s"}
    with zart.Worker(url, **options) as first, zart.Worker(url, **options) as second:
        wait_until(
            lambda: all(len(w._state.router.groups) == 2 for w in (first, second) if w._state.router),
            what="both workers to know both groups",
        )
        gated = zart.start(app.gated_echo, {"gate": str(gate), "value": 1}, database_url=url)
        wait_until(
            lambda: scalar(url, "SELECT count(*) FROM test_effects WHERE execution_id = %s", [gated.id])
        )
        for n in range(12):
            handle = zart.start(app.three_steps, {"n": n}, database_url=url)
            assert handle.result(timeout=5)["value"] == 2 * (n + 1)
        gate.touch()
        assert gated.result(timeout=10) == 1
        routers = [w._state.router for w in (first, second)]
    assert all(router is not None for router in routers)
    # Each notification woke one of the two (the gated start's and the handed-on ones included).
    acted = sum(router.acted for router in routers if router is not None)
    handed_on = sum(router.handed_on for router in routers if router is not None)
    assert handed_on >= 1  # about half of the 12 keys pick the full worker (none: 1 in 4,096)
    # (A hand-on offered while another was pending is folded into it: Forwarder.)
    assert 13 < acted <= 13 + handed_on
    claims = sum(int(n) for n in re.findall(r"event=worker\.stopped .*claims=(\d+)", caplog.text))
    assert claims <= 2 * 13 + 4, f"{claims} claim queries for 13 notifications"


def test_named_supervisors_share_the_notifications_between_them(fresh_database_url):
    """Two real `zart supervise --name`, stand-ins for two machines: each registers as its group,
    the executions started one at a time spread over both, and each start costs about one claim
    query, not one per supervisor (every worker polls only every minute here)."""
    url = fresh_database_url
    supervisors = [
        SupervisorProcess(worker_env(url), "--procs", "1", "--name", name, "--poll-interval", "60s", app=APP)
        for name in ("machine-a", "machine-b")
    ]
    try:
        for supervisor in supervisors:
            supervisor.wait_workers(1)
        wait_until(
            lambda: (
                query(url, "SELECT DISTINCT worker_group FROM zart_workers ORDER BY 1")
                == [("machine-a",), ("machine-b",)]
            ),
            what="both groups registered",
        )
        for n in range(20):
            handle = zart.start(app.three_steps, {"n": n}, database_url=url)
            assert handle.result(timeout=10)["value"] == 2 * (n + 1)
    finally:
        codes = [supervisor.stop() for supervisor in supervisors]
    assert codes == [0, 0]
    logs = [supervisor.log() for supervisor in supervisors]
    ran = [len(re.findall(r"event=worker\.stopped .*runs=([1-9]\d*)", log)) for log in logs]
    assert ran == [1, 1], "both machines ran executions (all 20 on one: 1 in 500,000)"
    claims = sum(int(n) for log in logs for n in re.findall(r"event=worker\.stopped .*claims=(\d+)", log))
    assert claims <= 20 + 20 + 4, f"{claims} claim queries for 20 starts on two machines"
