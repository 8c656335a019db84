from datetime import UTC, datetime, timedelta

import zart


@zart.step("ex-q-send-reminder")
def send_reminder(user: str) -> str:
    return f"reminded {user}"


@zart.workflow("ex-q-reminder", timeout="500ms")  # counted from the begin, not from the start
async def reminder(user: str) -> str:
    return await send_reminder(user)


if __name__ == "__main__":
    with zart.Worker():
        later = zart.start(reminder, "ada", delay="1s")  # a duration: "30s", "2h", a timedelta, seconds
        when = datetime.now(UTC) + timedelta(milliseconds=600)  # a timezone-aware datetime
        at = zart.start(reminder, "bob", run_at=when)
        print(later.status(), at.status())  # a new id each run: both wait
        print(later.result(timeout=30), "|", at.result(timeout=30))
    print(later.info().status, (later.info().started_at - later.info().created_at).total_seconds() >= 1)
    print(at.info().status, at.info().started_at >= when)
