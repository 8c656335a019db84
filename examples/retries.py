import trio
import zart


@zart.step("fetch-rate", retry="exponential(3, 100ms)")  # at most 4 attempts, 100ms, 200ms, 400ms apart
def fetch_rate(currency: str) -> float:
    attempt = zart.context().attempt
    if attempt < 3:  # a flaky service: the first two calls fail
        raise ConnectionError(f"rate service unreachable (attempt {attempt})")
    return 1.08


@zart.step(
    "charge-customer",
    retry=zart.Retry.exponential(5, "1s", "1m", jitter=True, non_retryable=(PermissionError,)),
)
def charge_customer(customer: str, amount: float) -> str:
    if customer == "mallory":
        raise PermissionError(f"card of {customer} declined")  # retrying will not help: fail at once
    return f"charged {amount:.2f} to {customer}"


@zart.step("render-statement", timeout="200ms", retry="fixed(1, 100ms)")  # 200ms per attempt
async def render_statement(pages: int) -> str:
    await trio.sleep(pages * 0.05)  # 50ms a page: 4 pages or more exceed the timeout
    return f"statement of {pages} pages"


@zart.workflow("billing-run")
async def billing_run(request: dict) -> dict:
    rate = await fetch_rate(request["currency"])
    report = {"rate": rate}
    try:
        report["charge"] = await charge_customer(request["customer"], request["amount"] * rate)
    except zart.StepFailed as failure:  # after the last attempt: catch it, or let the execution fail
        report["charge"] = [failure.error_type, failure.message]
    try:
        report["statement"] = await render_statement(request["pages"])
    except zart.StepFailed as failure:
        report["statement"] = [failure.error_type, failure.message]
    return report


@zart.workflow("quote-deadline", timeout="1s")  # from its begin to the end, whatever happens
async def quote_deadline(customer: str) -> str:
    await zart.sleep("cool-down", "1h")  # cut short by the deadline
    return f"quote for {customer}"


if __name__ == "__main__":
    with zart.Worker():
        request = {"currency": "EUR", "customer": "mallory", "amount": 10.0, "pages": 5}
        handle = zart.start(billing_run, request, id="billing-1")
        print(handle.result(timeout=30))
        for attempt in handle.attempts():
            print(attempt.step_key, attempt.attempt, attempt.outcome, attempt.error_type)

        late = zart.start(quote_deadline, "ada", id="quote-1")
        try:
            late.result(timeout=30)
        except zart.WorkflowTimedOut as timed_out:
            print(late.status(), "|", timed_out, "|", late.info().error["message"])
