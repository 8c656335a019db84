import time

import zart

# At most 2 renders in progress at once, counted across every worker process and machine.
renders = zart.Queue("ex-q-renders", concurrency=2)


@zart.step("ex-q-render-page")
def render_page(document: str, page: int) -> str:
    time.sleep(0.1)  # heavy work: a headless browser, a GPU, a licence server
    return f"{document}-{page}.png"


@zart.workflow("ex-q-render", queue=renders)  # every execution of the workflow waits its turn in it
async def render(document: dict) -> list:
    return [await render_page(document["name"], page) for page in range(1, document["pages"] + 1)]


def most_at_once(handles: list) -> int:
    """The largest number of these executions that were in progress (begun, not ended) at once."""
    infos = [handle.info() for handle in handles]
    moments = sorted([(i.started_at, 1) for i in infos] + [(i.finished_at, -1) for i in infos])
    now = most = 0
    for _, change in moments:
        now += change
        most = max(most, now)
    return most


if __name__ == "__main__":
    with zart.Worker():  # this worker could run 100 executions at once; the queue lets 2 in
        documents = [{"name": f"report-{n}", "pages": 2} for n in range(1, 7)]
        handles = zart.start_many(render, documents, ids=[f"render-report-{n}" for n in range(1, 7)])
        results = [handle.result(timeout=30) for handle in handles]  # every one ended
        print(results[0], results[-1])
        print("in progress at once, at most:", most_at_once(handles))
