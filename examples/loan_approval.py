"""A loan application that takes days: a flaky credit bureau retried for up to an hour, a week of
cooling-off, then two days for the decision."""

import zart

_bureau_calls: dict[str, int] = {}


@zart.step("credit-score", retry=zart.Retry.exponential(6, "4m", "1h"))
def credit_score(applicant: str) -> int:
    """The bureau is down for each applicant's first five calls: retried after 4, 8, 16, 32, 60 min."""
    calls = _bureau_calls[applicant] = _bureau_calls.get(applicant, 0) + 1
    if calls <= 5:
        raise ConnectionError("the credit bureau is unavailable")
    return 710


@zart.workflow("loan-approval")
async def loan_approval(application: dict) -> str:
    score = await credit_score(application["applicant"])
    await zart.sleep("cooling-off", "7d")
    try:
        decision = await zart.wait_for_event("decision", timeout="2d")
    except zart.EventTimeout:
        return "expired"
    return "approved" if decision["approve"] and score > 650 else "declined"
