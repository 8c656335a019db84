"""The overview's throughput chart: executions ended per minute over the last hour, as SVG geometry.

Stacked bars per minute (completed below, failed / timed out / cancelled above), scaled to the busiest
minute, drawn by the template as inline SVG: no script, no external library.
"""

from __future__ import annotations

import attrs

WIDTH = 720
HEIGHT = 160
TOP = 16  # room for the scale's label
BAR_GAP = 2


@attrs.frozen
class Column:
    x: float
    width: float
    done_y: float
    done_height: float
    other_y: float
    other_height: float
    title: str


@attrs.frozen
class Chart:
    width: int
    height: int
    columns: list[Column]
    peak: int  # the busiest minute's ends: the top of the scale
    total: int


def throughput(per_minute: list[tuple[int, int]]) -> Chart:
    """`per_minute`: (completed, other ends) for each minute, oldest first, the last one now."""
    peak = max([done + other for done, other in per_minute] + [1])
    slot = WIDTH / max(len(per_minute), 1)
    scale = (HEIGHT - TOP) / peak
    columns = []
    for index, (done, other) in enumerate(per_minute):
        ago = len(per_minute) - 1 - index
        done_height = done * scale
        other_height = other * scale
        columns.append(
            Column(
                index * slot,
                max(slot - BAR_GAP, 1.0),
                HEIGHT - done_height,
                done_height,
                HEIGHT - done_height - other_height,
                other_height,
                f"{ago} min ago: {done} completed, {other} failed, timed out or cancelled",
            )
        )
    return Chart(WIDTH, HEIGHT, columns, peak, sum(done + other for done, other in per_minute))
