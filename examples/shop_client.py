import zart

import shop

handle = zart.start(shop.order, {"order_id": "42", "amount": 9.5}, id="order-42")
print(handle.status())  # pending | running | ... | completed | failed
print(handle.result(timeout=60))
