from datetime import timedelta

import zart


@zart.step("send-trial-reminder")
def send_trial_reminder(customer: str) -> str:
    return f"reminded {customer} that the trial ends soon"


@zart.step("activate-plan")
def activate_plan(customer: str, plan: str) -> str:
    return f"{customer} is on the {plan} plan"


@zart.step("close-trial")
def close_trial(customer: str) -> str:
    return f"closed the trial of {customer}"


@zart.workflow("free-trial")
async def free_trial(signup: dict) -> dict:
    customer = signup["customer"]
    await zart.sleep("trial-period", signup.get("trial", timedelta(days=14)))  # no worker held meanwhile
    await send_trial_reminder(customer)
    try:
        choice = await zart.wait_for_event("subscribed", timeout=signup.get("grace", "3d"))
    except zart.EventTimeout:  # no `subscribed` event within the grace period
        return {"customer": customer, "outcome": await close_trial(customer)}
    return {"customer": customer, "outcome": await activate_plan(customer, choice["plan"])}


if __name__ == "__main__":
    with zart.Worker():
        handle = zart.start(free_trial, {"customer": "ada", "trial": "500ms"})  # a new id each run
        # Sent while the trial still sleeps: the event is kept until the wait takes it.
        print(zart.send_event(handle.id, "subscribed", {"plan": "pro"}, key="ada-pro"))
        print(zart.send_event(handle.id, "subscribed", {"plan": "pro"}, key="ada-pro"))  # same key
        print(handle.result(timeout=30))
        for entry in handle.steps():
            print(entry.key, entry.kind, entry.status, entry.result)

        expired = zart.start(free_trial, {"customer": "bob", "trial": "100ms", "grace": "200ms"})
        print(expired.result(timeout=30))
        try:
            zart.send_event(expired.id, "subscribed", {"plan": "pro"})
        except zart.ExecutionFinished:
            print("too late: the execution has ended, and the event was not stored")
