import time

import zart

import shop
import sleep_events

with zart.Worker():
    order = zart.start(shop.order, {"order_id": "77", "amount": 3.5}, id="order-77")
    order.result(timeout=30)
    for entry in order.steps():  # the history: one entry per step call, sleep and event wait
        print(entry.position, entry.key, entry.kind, entry.status, entry.attempts, entry.result)
    for attempt in order.attempts():  # every start of a step's body, with the worker that ran it
        print(attempt.step_key, attempt.attempt, attempt.outcome, attempt.worker_id is not None)

    trial = zart.start(sleep_events.free_trial, {"customer": "eve"}, id="trial-eve")  # a 14-day sleep
    while trial.status() in ("pending", "running"):  # for this demo only: until the trial sleeps
        time.sleep(0.05)
    print([(entry.key, entry.status) for entry in trial.steps()])
    print(trial.cancel(reason="customer closed the account"))  # True: cancelled now
    print(trial.cancel())  # False: it had already ended
    try:
        trial.result(timeout=5)
    except zart.Cancelled as cancelled:
        print(trial.status(), "|", cancelled, "|", trial.info().error)
