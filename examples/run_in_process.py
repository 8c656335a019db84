import zart

import shop

# A worker in this process, in a background thread, until the block ends.
with zart.Worker():
    handle = zart.start(shop.order, {"order_id": "7", "amount": 20.0}, id="order-7")
    print(handle.result(timeout=30))

    info = zart.get("order-7").info()  # any process can look an execution up by its id
    print(info.workflow, info.status, info.input, info.error)
    print(info.result == handle.result(), info.finished_at is not None)

    recent = zart.list(workflow="order", status="completed", limit=10)  # newest first
    print("order-7" in [execution.id for execution in recent])
