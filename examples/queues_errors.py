import os
from datetime import datetime

import psycopg
import zart

from queues_concurrency import render


def show(call) -> None:
    try:
        call()
    except (TypeError, ValueError, LookupError) as error:
        print(f"{type(error).__name__}: {error}")


show(lambda: zart.Queue("ex-q-broken", rate="100 per second"))
show(lambda: zart.Queue("ex-q-broken", per_key=0))
show(lambda: zart.Queue("ex-q-renders", concurrency=3))  # declared with 2 in queues_concurrency.py
show(lambda: zart.start(render, {"name": "r", "pages": 1}, queue="ex-q-nowhere"))
show(lambda: zart.start(render, {"name": "r", "pages": 1}, priority="high"))
show(lambda: zart.start(render, {"name": "r", "pages": 1}, delay="soon"))
show(lambda: zart.start(render, {"name": "r", "pages": 1}, run_at=datetime(2030, 1, 1)))
show(lambda: zart.start(render, {"name": "r", "pages": 1}, delay="1m", run_at=datetime(2030, 1, 1)))
show(lambda: zart.start(render, {"name": "r", "pages": 1}, key=""))
show(lambda: zart.start_many(render, [{"name": "r", "pages": 1}] * 2, ids=["r-1", "r-1"]))
with psycopg.connect(os.environ["ZART_DATABASE_URL"], autocommit=True) as conn:
    show(lambda: zart.start(render, {"name": "r", "pages": 1}, connection=conn))
