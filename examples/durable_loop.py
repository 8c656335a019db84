import zart


@zart.step("list-subscribers")
def list_subscribers(mailing_list: str) -> list:
    # A database query in real life: its answer changes over time, so it runs in a step and the
    # workflow loops over the recorded list, the same one on every replay.
    return ["ada@example.com", "bob@example", "cy@example.com"]


@zart.step("verify-address")
def verify_address(address: str) -> bool:
    return address.rpartition("@")[2].count(".") > 0


@zart.step("send-issue")
def send_issue(address: str, title: str) -> str:
    # Stable across retries of this call, different for every other call: give it to the mail API.
    return f"sent {title!r} to {address}, key {zart.context().idempotency_key}"


@zart.workflow("newsletter")
async def newsletter(issue: dict) -> list:
    subscribers = await list_subscribers(issue["list"])
    valid = await zart.map(verify_address, subscribers, concurrency=10)  # verify-address[0], [1], ...
    sent = []
    for address, ok in zip(subscribers, valid, strict=True):  # one at a time: send-issue#1, #2, ...
        if ok:
            sent.append(await send_issue(address, issue["title"]))
    return sent


if __name__ == "__main__":
    with zart.Worker():
        handle = zart.start(newsletter, {"list": "customers", "title": "May news"}, id="newsletter-5")
        for line in handle.result(timeout=30):
            print(line)
        print([entry.key for entry in handle.steps()])
