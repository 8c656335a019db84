"""zart.shielded: a wait for a commit outlives a cancellation, which is then raised after it."""

from __future__ import annotations

import trio
import trio.testing

from zart.shielded import ShieldedEvent


def test_a_cancelled_waiter_waits_for_the_event_then_sees_the_cancellation():
    seen: list[str] = []

    async def main() -> None:
        event = ShieldedEvent()

        async def waiter(scope_ready: trio.Event, scopes: list[trio.CancelScope]) -> None:
            with trio.CancelScope() as scope:
                scopes.append(scope)
                scope_ready.set()
                await event.wait()
                seen.append("woken")
                await trio.lowlevel.checkpoint()  # the cancellation lands here
                seen.append("not cancelled")
            seen.append("cancelled" if scope.cancelled_caught else "ended")

        ready, scopes = trio.Event(), []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter, ready, scopes)
            await ready.wait()
            scopes[0].cancel()
            await trio.testing.wait_all_tasks_blocked()
            assert seen == []  # still waiting, cancelled or not
            event.set()
        assert event.is_set()
        await event.wait()  # set already: returns at once

    trio.run(main)
    assert seen == ["woken", "cancelled"]
