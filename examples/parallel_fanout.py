"""Parallel fan-out with compensation: book a trip's flight, hotel and car at once.

The three reservations are branches of `zart.parallel`: tasks of their own that any worker may run,
each checkpointed on its own, so a crash re-runs only the unfinished ones. When one fails, the
workflow gets StepFailed with every branch's outcome and releases the reservations that were made.

    python parallel_fanout.py           # in examples/: two trips, on a worker in this process
"""

from __future__ import annotations

import zart


@zart.step("reserve-flight", retry="fixed(2, 100ms)")
def reserve_flight(trip: dict) -> str:
    return f"flight to {trip['city']} on {trip['day']}"


@zart.step("reserve-hotel", retry="fixed(2, 100ms)")
def reserve_hotel(trip: dict) -> str:
    return f"hotel in {trip['city']}, {trip['nights']} nights"


@zart.step("reserve-car", retry="fixed(2, 100ms)")
def reserve_car(trip: dict) -> str:
    if trip["city"] in trip.get("sold_out", []):
        raise zart.NonRetryable(f"no car left in {trip['city']}")  # no retry helps
    return f"car in {trip['city']}"


@zart.step("release-reservation")
def release_reservation(reservation: str) -> str:
    return f"released {reservation}"


@zart.workflow("book-trip")
async def book_trip(trip: dict) -> dict:
    try:
        booked = await zart.parallel(reserve_flight(trip), reserve_hotel(trip), reserve_car(trip))
    except zart.StepFailed as failure:  # raised once every branch has finished
        made = [outcome["result"] for outcome in failure.outcomes if outcome["status"] == "completed"]
        released = [await release_reservation(reservation) for reservation in made]
        return {"booked": False, "reason": failure.message, "released": released}
    return {"booked": True, "reservations": booked}


if __name__ == "__main__":
    with zart.Worker():  # a worker in this process, in a background thread
        trip = {"city": "Lisbon", "day": "2024-06-01", "nights": 3}
        print(zart.start(book_trip, trip).result(timeout=30))
        print(zart.start(book_trip, {**trip, "sold_out": ["Lisbon"]}).result(timeout=30))
