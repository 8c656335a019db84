"""Follow a stream over HTTP (Server-Sent Events) from Python: `python progress_sse.py` (in examples/).

Serves the HTTP API in this process (the app `zart serve` runs) next to a worker, starts
`resize-album` (progress.py) and reads its `progress` stream with httpx, as any client would.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Iterator

import httpx
import uvicorn
import zart
from zart.http import Settings, create_app

from progress import resize_album


def follow(base_url: str, execution_id: str, stream: str) -> Iterator[object]:
    """Each value of the stream: those already emitted, then each as it is committed, until the
    execution has ended (the `end` event). On a reconnect, send the last `id` as `Last-Event-ID`."""
    url = f"{base_url}/v1/executions/{execution_id}/streams/{stream}"
    with httpx.stream("GET", url, timeout=None) as response:
        response.raise_for_status()
        event, data = "message", None
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: "):
                data = line.removeprefix("data: ")
            elif line == "":  # the end of one event
                if event == "end":
                    return
                if data is not None:
                    yield json.loads(data)
                event, data = "message", None


if __name__ == "__main__":
    listening = socket.create_server(("127.0.0.1", 0))
    app = create_app(Settings(database_url=os.environ["ZART_DATABASE_URL"]))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    serving = threading.Thread(target=server.run, kwargs={"sockets": [listening]})
    serving.start()
    try:
        with zart.Worker():
            handle = zart.start(resize_album, ["cat.jpg", "dog.jpg", "owl.jpg"])
            host, port = listening.getsockname()
            for progress in follow(f"http://{host}:{port}", handle.id, "progress"):
                print(progress)
    finally:
        server.should_exit = True
        serving.join()
