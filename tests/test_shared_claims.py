"""zart.shared_claims: which sibling a hand-over wakes (the processes themselves: tests/test_supervise.py)."""

from __future__ import annotations

import os
import time

import pytest
import trio

from zart.shared_claims import SharedClaims


@pytest.fixture
def shared():
    claims = SharedClaims.create(primaries=2, workers=5, alive_seconds=5.0)
    yield claims
    claims.close()


def woken(shared: SharedClaims) -> list[int]:
    """The ranks whose pipe holds a wake-up (drained)."""
    ranks = []
    for rank, (read_end, _) in enumerate(shared.pipes):
        try:
            if os.read(read_end, 512):
                ranks.append(rank)
        except BlockingIOError:
            pass
    return ranks


def test_a_hand_over_wakes_the_roomiest_primary_before_any_spare(shared):
    for rank, free in enumerate([0, 3, 9, 9, 9]):
        shared.publish(rank, free)
    assert shared.hand_over(0) is True
    assert woken(shared) == [1]  # a primary with room, though the spares have more
    shared.publish(1, 0)
    assert not shared.primary_has_room()
    assert shared.hand_over(0) is True
    assert woken(shared) == [4]  # the spares tie: one of them, not all


def test_a_hand_over_skips_itself_the_full_and_the_silent(shared):
    for rank, free in enumerate([5, 0, 0, 7, 2]):
        shared.publish(rank, free)
    assert shared.hand_over(0) is True
    assert woken(shared) == [3]
    shared.seen[3] = time.time() - 60  # its loop stopped going round: hung or dead
    assert shared.hand_over(0) is True
    assert woken(shared) == [4]
    shared.publish(4, 0)
    assert shared.hand_over(0) is False  # nobody but us has room: nothing to wake
    assert woken(shared) == []


def test_a_primary_defers_only_to_a_primary_with_a_batch_more_room(shared):
    shared.publish(0, 100)
    shared.publish(1, 140)
    shared.publish(2, 500)  # a spare: never a reason to stop claiming
    assert shared.roomier_primary(0, 100, margin=50) is False
    assert shared.roomier_primary(0, 90, margin=50) is True
    assert shared.roomier_primary(1, 140, margin=50) is False


def test_a_full_pipe_keeps_its_wake_up():
    shared = SharedClaims.create(primaries=1, workers=2, alive_seconds=5.0)
    try:
        shared.publish(1, 4)
        for _ in range(100_000):  # far more than a pipe holds: no error, no block
            shared.hand_over(0)

        async def wait() -> None:
            with trio.fail_after(5):
                await shared.wait_for_wake(1)

        trio.run(wait)
    finally:
        shared.close()
