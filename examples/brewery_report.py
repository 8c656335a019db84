"""A durable loop over a data file: enrich every brewery of data/breweries.csv, write a report.

`zart.map` runs one step per row with a checkpoint each (`enrich-brewery[0]`, `[1]`, ...), at most
8 at a time: if the process dies half-way, the rerun skips the rows already done.

    python brewery_report.py [REPORT.md]    # in examples/: on a worker in this process
"""

from __future__ import annotations

import csv
import sys
import tempfile
from collections import Counter
from pathlib import Path

import zart

DATA = Path(__file__).resolve().parent / "data" / "breweries.csv"

# The look-up table (a real step might call an API here: its retry policy absorbs hiccups).
CENSUS_REGIONS = {
    "Northeast": "Maine, New Hampshire, Vermont, Pennsylvania",
    "Midwest": "Wisconsin, Minnesota, Iowa, Kansas, Nebraska, Michigan",
    "South": "Virginia, North Carolina, South Carolina, Georgia, Florida, Tennessee, Louisiana, "
    "Mississippi, Arkansas, Texas",
    "West": "Colorado, California, Arizona, Oregon, Washington, Utah, Montana, Alaska",
}
REGION_OF_STATE = {state: region for region, states in CENSUS_REGIONS.items() for state in states.split(", ")}


@zart.step("load-breweries")
def load_breweries(path: str) -> list[dict]:
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


@zart.step("enrich-brewery", retry="exponential(3, 100ms)")
def enrich_brewery(brewery: dict) -> dict:
    region = REGION_OF_STATE.get(brewery["state"])
    if region is None:
        raise zart.NonRetryable(f"no census region for state {brewery['state']!r}")
    return {
        "name": brewery["name"],
        "city": f"{brewery['city']}, {brewery['state']}",
        "type": brewery["brewery_type"],
        "region": region,
        "founded": int(brewery["founded"]),
    }


@zart.step("write-brewery-report")
def write_brewery_report(breweries: list[dict], path: str) -> dict:
    by_region = Counter(brewery["region"] for brewery in breweries)
    by_type = Counter(brewery["type"] for brewery in breweries)
    lines = ["# Breweries by region", "", "| region | breweries | oldest |", "|---|---|---|"]
    for region, count in sorted(by_region.items()):
        oldest = min((b for b in breweries if b["region"] == region), key=lambda b: b["founded"])
        lines.append(f"| {region} | {count} | {oldest['name']} ({oldest['founded']}) |")
    lines += ["", "# Breweries by type", ""]
    lines += [f"- {kind}: {count}" for kind, count in sorted(by_type.items())]
    Path(path).write_text("\n".join(lines) + "\n")
    return {"breweries": len(breweries), "regions": dict(sorted(by_region.items())), "report": path}


@zart.workflow("brewery-report")
async def brewery_report(job: dict) -> dict:
    breweries = await load_breweries(job["csv"])
    enriched = await zart.map(enrich_brewery, breweries, concurrency=8)  # a checkpoint per row
    return await write_brewery_report(enriched, job["report"])


if __name__ == "__main__":
    report = sys.argv[1] if len(sys.argv) > 1 else str(Path(tempfile.gettempdir()) / "brewery_report.md")
    with zart.Worker():  # a worker in this process, in a background thread
        handle = zart.start(brewery_report, {"csv": str(DATA), "report": report})
        print(handle.result(timeout=60))
    print(Path(report).read_text(), end="")
