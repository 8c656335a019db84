"""Workflows for the retry, timeout and failure tests."""

from __future__ import annotations

import time

import trio

import zart

from .core_app import record_effect


@zart.step("flaky", retry="exponential(3, 100ms)")
def flaky() -> str:
    """Fails on its first two attempts, succeeds on the third."""
    attempt = zart.context().attempt
    record_effect(attempt)
    if attempt < 3:
        raise ConnectionError(f"transient failure on attempt {attempt}")
    return f"succeeded on attempt {attempt}"


@zart.workflow("retry-until-success")
async def retry_until_success() -> str:
    return await flaky()


@zart.step("always-fails", retry=zart.Retry.fixed(2, "50ms"))
async def always_fails() -> None:
    record_effect(zart.context().attempt)
    raise ValueError("the service is down")


@zart.workflow("fallback-on-failure")
async def fallback_on_failure() -> dict:
    try:
        await always_fails()
    except zart.StepFailed as failure:
        return {"fallback": True, "error_type": failure.error_type, "message": failure.message}
    return {"fallback": False}


@zart.workflow("fails-after-retries")
async def fails_after_retries() -> None:
    await always_fails()


@zart.step("declined", retry=zart.Retry.exponential(5, "10ms", non_retryable=(PermissionError,)))
def declined(how: str) -> None:
    record_effect(how)
    if how == "non-retryable-type":
        raise PermissionError("card declined")
    raise zart.NonRetryable("card declined for good")


@zart.workflow("non-retryable")
async def non_retryable(how: str) -> str:
    try:
        await declined(how)
    except zart.StepFailed as failure:
        return failure.error_type
    return "no failure"


@zart.step("fails-once-slowly", retry="fixed(1, 2s)")
def fails_once_slowly() -> int:
    attempt = zart.context().attempt
    record_effect(attempt)
    if attempt == 1:
        raise TimeoutError("first attempt fails; the retry comes 2 s later")
    return attempt


@zart.workflow("retry-after-two-seconds")
async def retry_after_two_seconds() -> int:
    return await fails_once_slowly()


@zart.step("slow-async", timeout="200ms")
async def slow_async() -> None:
    record_effect()
    await trio.sleep(30)


@zart.step("slow-sync", timeout="200ms")
def slow_sync() -> None:
    record_effect()
    time.sleep(1.5)  # the attempt is abandoned after 200 ms; the thread ends on its own


@zart.workflow("step-timeouts")
async def step_timeouts() -> dict:
    outcomes = {}
    for name, step in (("async", slow_async), ("sync", slow_sync)):
        try:
            await step()
            outcomes[name] = "finished"
        except zart.StepFailed as failure:
            outcomes[name] = failure.error_type
    return outcomes


@zart.step("keeps-failing", retry="fixed(5, 10s)")
def keeps_failing() -> None:
    record_effect(zart.context().attempt)
    raise RuntimeError("never works")


@zart.workflow("times-out-in-back-off", timeout="1s")
async def times_out_in_back_off() -> None:
    await keeps_failing()


@zart.step("very-slow")
async def very_slow() -> None:
    record_effect()
    await trio.sleep(30)


@zart.workflow("times-out-mid-step", timeout="500ms")
async def times_out_mid_step() -> None:
    await very_slow()
