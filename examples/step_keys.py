import zart


@zart.step("fetch-page")
async def fetch_page(n: int) -> dict:
    return {"page": n, "key": zart.context().step_key}


@zart.step("save-page")
def save_page(page: dict) -> dict:
    ctx = zart.context()  # inside a step: where it runs, durably speaking
    return {"key": ctx.step_key, "attempt": ctx.attempt, "idempotency_key": ctx.idempotency_key}


@zart.workflow("crawl")
async def crawl(pages: int) -> list:
    ctx = zart.context()  # inside the workflow body: the execution, but no step
    log = [f"{ctx.workflow} {ctx.execution_id} {ctx.step_key}"]
    for n in range(1, pages + 1):
        page = await fetch_page(n)  # fetch-page#1, then fetch-page#2
        log.append(page["key"])
        log.append(await save_page(page))  # save-page#1, then save-page#2
    return log


if __name__ == "__main__":
    with zart.Worker():
        for line in zart.start(crawl, 2, id="crawl-1").result(timeout=30):
            print(line)
