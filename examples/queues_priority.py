import time

import zart

mail = zart.Queue("ex-q-mail", concurrency=1)  # one at a time, to show the order


@zart.step("ex-q-send-mail")
def send_mail(kind: str, to: str) -> str:
    time.sleep(0.05)
    return f"{kind} to {to}"


@zart.workflow("ex-q-mail-out", queue=mail)
async def mail_out(message: dict) -> str:
    return await send_mail(message["kind"], message["to"])


if __name__ == "__main__":
    # Queued in this order, before any worker runs. Lower numbers begin first; the default is 0.
    newsletters = zart.start_many(
        mail_out,
        [{"kind": "newsletter", "to": to} for to in ("ada", "bob", "cy")],
        ids=["mail-newsletter-ada", "mail-newsletter-bob", "mail-newsletter-cy"],
        priority=10,  # bulk: after everything else
    )
    receipt = zart.start(mail_out, {"kind": "receipt", "to": "bob"}, id="mail-receipt-bob")
    reset = zart.start(mail_out, {"kind": "password-reset", "to": "cy"}, id="mail-reset-cy", priority=-10)
    handles = [*newsletters, receipt, reset]
    with zart.Worker():
        for handle in handles:
            handle.result(timeout=30)
    began = sorted(handles, key=lambda handle: handle.info().started_at)
    print([handle.info().input["kind"] for handle in began])
