"""Streams: a workflow reports its progress as it goes: `python progress.py` (in examples/).

Runs `resize-album` on a worker in this process and prints each value of its `progress` stream as
it is committed, then the result.
"""

from __future__ import annotations

import zart


@zart.step("resize")
def resize(photo: str) -> str:
    return f"{photo} resized"


@zart.workflow("resize-album")
async def resize_album(photos: list[str]) -> int:
    for done, photo in enumerate(photos, start=1):
        await resize(photo)
        # Durable, once per execution: a replay after a crash does not emit it again.
        await zart.emit("progress", {"done": done, "of": len(photos), "photo": photo})
    return len(photos)


if __name__ == "__main__":
    with zart.Worker():  # a worker in this process, in a background thread
        handle = zart.start(resize_album, ["cat.jpg", "dog.jpg", "owl.jpg"])
        for progress in handle.stream("progress"):  # from the first value, then live; ends with it
            print(progress)
        print(handle.result(timeout=30))
