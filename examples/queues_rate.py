import zart

# The geocoding API allows 4 calls per 500 ms: at most 4 executions begin in any 500 ms window.
geocoding = zart.Queue("ex-q-geocoding", rate="4/500ms")


@zart.step("ex-q-geocode", retry="exponential(5, 1s)")  # an HTTP 429 anyway? back off and retry
def geocode(address: str) -> dict:
    number = int(address.split()[0])
    return {"address": address, "lat": 52.5 + number / 1000, "lon": 13.4}  # the API's answer


@zart.workflow("ex-q-locate", queue=geocoding)
async def locate(address: str) -> dict:
    return await geocode(address)  # one call of the limited API per execution


if __name__ == "__main__":
    addresses = [f"{n} Main Street" for n in range(1, 11)]
    with zart.Worker():
        handles = zart.start_many(locate, addresses, ids=[f"locate-{n}" for n in range(1, 11)])
        print([handle.result(timeout=30) for handle in handles][-1])
    began = sorted(handle.info().started_at for handle in handles)
    window = max(sum(1 for t in began if 0 <= (t - first).total_seconds() < 0.5) for first in began)
    print("began in any 500 ms, at most:", window)
    print("from the first begin to the last, at least 1 s:", (began[-1] - began[0]).total_seconds() >= 1.0)
