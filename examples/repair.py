import json
import tempfile
import time
from pathlib import Path

import zart

import invoices
import sleep_events

rates = Path(tempfile.mkdtemp()) / "rates.json"
rates.write_text(json.dumps({"DE": 0.19}))  # no rate for France yet: the bug
payload = {"id": "inv-1", "amount": 100.0, "country": "FR", "rates_file": str(rates)}

failing = zart.start(invoices.invoice, payload, id="inv-1")
try:
    failing.result(timeout=30)
except zart.WorkflowFailed as failed:
    print(failing.status(), "|", failed.error_type, failed.message)
print([(entry.key, entry.status) for entry in failing.steps()])

rates.write_text(json.dumps({"DE": 0.19, "FR": 0.2}))  # the fix, deployed
print(zart.resume("inv-1").result(timeout=30))  # runs on from apply-tax#1
print([(a.step_key, a.attempt, a.outcome) for a in failing.attempts()])

rates.write_text(json.dumps({"DE": 0.19, "FR": 0.055}))  # that rate was wrong: run the tax again
again = zart.fork("inv-1", from_step="apply-tax#1", id="inv-1-corrected")
print(again.result(timeout=30), "|", again.info().forked_from, "at", again.info().forked_at)
print(zart.get("inv-1").info().forks, "|", zart.get("inv-1").result())

trial = zart.start(sleep_events.free_trial, {"customer": "zoe"}, id="trial-zoe")  # a 14-day sleep
while trial.status() in ("pending", "running"):  # for this demo only: until the trial sleeps
    time.sleep(0.05)
print(zart.pause("trial-zoe"), trial.status(), "|", zart.unpause("trial-zoe"), trial.status())
trial.cancel()
