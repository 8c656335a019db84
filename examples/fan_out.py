import zart

RATES = {"fastship": 4.0, "cheapcargo": 2.5}


@zart.step("carrier-quote", retry="fixed(2, 100ms)")  # each branch has its own attempts and retries
def carrier_quote(carrier: str, kilos: float) -> dict:
    if carrier not in RATES:
        raise LookupError(f"{carrier} does not answer")
    return {"carrier": carrier, "price": RATES[carrier] * kilos}


@zart.step("make-thumbnail")
def make_thumbnail(photo: str) -> str:
    return photo.replace(".jpg", "-small.jpg")


@zart.workflow("cheapest-shipping")
async def cheapest_shipping(parcel: dict) -> dict:
    calls = [carrier_quote(carrier, parcel["kilos"]) for carrier in parcel["carriers"]]  # not awaited
    try:
        quotes = await zart.parallel(*calls)  # every quote at once, on any worker; results in order
    except zart.StepFailed as failure:  # raised once every branch has finished
        quotes = [outcome["result"] for outcome in failure.outcomes if outcome["status"] == "completed"]
    return min(quotes, key=lambda quote: quote["price"])


@zart.workflow("photo-album")
async def photo_album(album: dict) -> list:
    return await zart.map(make_thumbnail, album["photos"], concurrency=2)  # 2 in flight at most


if __name__ == "__main__":
    with zart.Worker():
        parcel = {"kilos": 2.0, "carriers": ["fastship", "slowpost", "cheapcargo"]}
        shipping = zart.start(cheapest_shipping, parcel, id="parcel-1")
        print(shipping.result(timeout=30))
        for entry in shipping.steps():
            print(entry.key, entry.status, entry.attempts, entry.result or entry.error["message"])

        album = zart.start(photo_album, {"photos": ["beach.jpg", "dune.jpg", "sea.jpg"]}, id="album-1")
        print(album.result(timeout=30))
        print([entry.key for entry in album.steps()])
