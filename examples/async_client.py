import asyncio

import trio
import zart

import shop


async def place(order_id: str) -> None:
    handle = await zart.astart(shop.order, {"order_id": order_id, "amount": 5.0}, id=f"order-{order_id}")
    print(await handle.aresult(timeout=30))
    again = await zart.aget(f"order-{order_id}")
    print(again.workflow, await again.astatus())


with zart.Worker():
    trio.run(place, "100")  # under trio ...
    asyncio.run(place("101"))  # ... and under asyncio alike
