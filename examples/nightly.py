"""A nightly report on a cron schedule (docs/composition.md, "Schedules").

`python nightly.py` runs a worker here. So as not to wait for 03:00, it also schedules the same
workflow every second with `zart.schedule`, waits for that schedule's first execution, prints its
result, and removes the schedule again.
"""

import time

import zart


@zart.step("ex-nightly-count-orders")
def count_orders(day: str) -> int:
    return len(day)  # a real report would query the day's orders


@zart.step("ex-nightly-send-report")
def send_report(day: str, orders: int) -> str:
    return f"report for {day}: {orders} orders"


# Every day at 03:00 Berlin time; the input is the firing time, ISO-8601 in UTC ("2026-11-27T02:00:00Z").
@zart.workflow("ex-nightly-report", schedule="0 3 * * *", timezone="Europe/Berlin", catch_up="latest")
async def nightly_report(fired_at: str) -> str:
    return await send_report(fired_at[:10], await count_orders(fired_at[:10]))


def last_execution(name: str) -> str | None:
    return next(s.last_execution for s in zart.list_schedules() if s.name == name)


if __name__ == "__main__":
    with zart.Worker(poll_interval="0.5s"):
        zart.schedule("ex-nightly-now", "* * * * * *", nightly_report)  # 6 fields: seconds last
        try:
            while (fired := last_execution("ex-nightly-now")) is None:
                time.sleep(0.1)
            print(fired.startswith("ex-nightly-now@"), zart.get(fired).result(timeout=30))
        finally:
            zart.unschedule("ex-nightly-now")
    print([s.name for s in zart.list_schedules()])
