"""Workflows of the test kit's tests (tests/test_testing.py): an approval that takes days, and its
short version, to run both in real time and with the clock skipped."""

from __future__ import annotations

import zart

# Calls per applicant: the bureau fails each applicant's first calls, whichever run this is.
_calls: dict[str, int] = {}


def _flaky(applicant: str, failures: int) -> int:
    calls = _calls[applicant] = _calls.get(applicant, 0) + 1
    if calls <= failures:
        raise ConnectionError(f"bureau unavailable (call {calls})")
    return 700 + calls


@zart.step("kit-score", retry=zart.Retry.exponential(4, "8m", "1h"))
def score(applicant: str) -> int:
    return _flaky(applicant, 4)  # back-offs 8, 16, 32 and 60 min


async def _approve(scoring: zart.Step, application: dict, cool_off: str, decision_within: str) -> dict:
    """The approval's body, the long and the short one alike: a score, a sleep, a decision."""
    points = await scoring(application["applicant"])
    await zart.sleep("cool-off", cool_off)
    try:
        decision = await zart.wait_for_event("decision", timeout=decision_within)
    except zart.EventTimeout:
        decision = None
    return {"score": points, "decision": decision}


@zart.workflow("kit-approval")
async def approval(application: dict) -> dict:
    """Retries to an hour, sleeps 7 days, waits 2 days for a decision."""
    return await _approve(score, application, "7d", "2d")


@zart.step("kit-score-short", retry=zart.Retry.exponential(3, "100ms", "300ms"))
def score_short(applicant: str) -> int:
    return _flaky(applicant, 3)


@zart.workflow("kit-approval-short")
async def approval_short(application: dict) -> dict:
    """The same shape in about two seconds of real time."""
    return await _approve(score_short, application, "700ms", "500ms")


@zart.step("kit-blocks")
def blocks(seconds: float) -> float:
    import time

    time.sleep(seconds)
    return seconds


@zart.workflow("kit-busy")
async def busy(seconds: float) -> float:
    return await blocks(seconds)


@zart.workflow("kit-napper")
async def napper(days: int) -> int:
    await zart.sleep("nap", f"{days}d")
    return days


@zart.workflow("kit-family")
async def family(count: int) -> list:
    """A child that sleeps a day, and a map of children that sleep their index in days."""
    first = await zart.child(napper, 1)
    rest = await zart.map(napper, list(range(2, 2 + count)), concurrency=2)
    return [first, *rest]


@zart.workflow("kit-report")
async def report(fired_at: str) -> str:
    return fired_at


@zart.workflow("kit-deadline", timeout="1d")
async def deadline() -> None:
    await zart.sleep("long", "2d")
