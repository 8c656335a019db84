"""The loan approval run by hand, without pytest: a database of its own, a worker, a clock moved."""

from zart.testing import workflow_env

from loan_approval import loan_approval

with workflow_env() as env:  # on $ZART_TEST_DATABASE_URL, $ZART_DATABASE_URL or the embedded server
    handle = env.start(loan_approval, {"applicant": "cy"})
    env.advance("10d")  # the retries, the week of cooling-off, the two days for a decision
    print(handle.result(timeout=5), "after", env.skipped)
