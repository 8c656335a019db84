"""Locust load test of `zart serve`: clients that start orders, ship them and poll their status.

Behind the server, `zart supervise --app bench.workflows` runs the `bench-order` workflow (two steps,
a wait for the `shipment_ready` event, a last step). Each simulated client:

* starts new orders (POST /v1/executions, 201),
* delivers the shipment event of an order it started (POST .../events/shipment_ready, 202, with an
  idempotency key),
* polls its orders (GET /v1/executions/{id}, 200), forgetting those it saw completed,
* now and then lists the completed orders (GET /v1/executions?...) or starts an order it already
  started again (200, the same execution).

Any other status, and any order that ends `failed`, `timed_out` or `cancelled`, counts as a failure.
With ZART_API_TOKEN set, requests carry it; ZART_BENCH_WAIT="MIN,MAX" sets the think time
between two requests of a client (default 0.05,0.5 seconds). Run it with `python -m bench.load`,
or by hand (docs/http-api.md):

    locust -f bench/locustfile.py --headless -u 50 -r 10 -t 60s --host http://127.0.0.1:8080
"""

from __future__ import annotations

import os
import random
import uuid
from urllib.parse import quote

from locust import FastHttpUser, between, task

WORKFLOW = "bench-order"  # bench/workflows.py
EVENT = "shipment_ready"
BAD_ENDS = {"failed", "timed_out", "cancelled"}
STATUSES = {"pending", "running", "sleeping", "waiting", "completed"}
# Think time of a client between two requests, in seconds: "MIN,MAX" (0,0 measures saturation).
WAIT = [float(part) for part in os.environ.get("ZART_BENCH_WAIT", "0.05,0.5").split(",")]


class OrderClient(FastHttpUser):
    wait_time = between(WAIT[0], WAIT[-1])

    def on_start(self) -> None:
        token = os.environ.get("ZART_API_TOKEN")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.unshipped: list[str] = []  # started, shipment event not sent yet
        self.in_flight: list[str] = []  # shipment event sent, not seen completed yet
        self.started: list[str] = []  # every order this client started

    @staticmethod
    def path(order_id: str) -> str:
        return f"/v1/executions/{quote(order_id, safe='')}"

    @task(4)
    def start_order(self) -> None:
        order_id = f"bench-{uuid.uuid4().hex}"
        order = {
            "order_id": order_id,
            "amount": round(random.uniform(5, 500), 2),
            "items": random.randint(1, 9),
        }
        with self.client.post(
            "/v1/executions",
            json={"workflow": WORKFLOW, "input": order, "id": order_id},
            headers=self.headers,
            name="start order",
            catch_response=True,
        ) as response:
            if response.status_code != 201:
                response.failure(f"start: {response.status_code} {response.text[:200]}")
                return
            self.unshipped.append(order_id)
            self.started.append(order_id)

    @task(3)
    def ship_order(self) -> None:
        if not self.unshipped:
            return
        order_id = self.unshipped.pop(0)
        with self.client.post(
            f"{self.path(order_id)}/events/{EVENT}",
            json={"payload": {"tracking_number": f"T-{order_id[-8:]}"}, "key": f"ship-{order_id}"},
            headers=self.headers,
            name="deliver event",
            catch_response=True,
        ) as response:
            if response.status_code != 202:
                response.failure(f"event: {response.status_code} {response.text[:200]}")
                return
            self.in_flight.append(order_id)

    @task(6)
    def poll_order(self) -> None:
        watched = self.in_flight + self.unshipped
        if not watched:
            return
        order_id = random.choice(watched)
        with self.client.get(
            self.path(order_id), headers=self.headers, name="get execution", catch_response=True
        ) as response:
            if response.status_code != 200:
                response.failure(f"get: {response.status_code} {response.text[:200]}")
                return
            status = response.json()["status"]
            if status in BAD_ENDS or status not in STATUSES:
                response.failure(f"order {order_id} is {status}: {response.text[:300]}")
            if status == "completed" or status in BAD_ENDS:
                if order_id in self.in_flight:
                    self.in_flight.remove(order_id)
                if order_id in self.unshipped:
                    response.failure(f"order {order_id} ended ({status}) before its shipment event")
                    self.unshipped.remove(order_id)

    @task(1)
    def list_completed(self) -> None:
        with self.client.get(
            f"/v1/executions?workflow={WORKFLOW}&status=completed&limit=20",
            headers=self.headers,
            name="list executions",
            catch_response=True,
        ) as response:
            if response.status_code != 200 or "executions" not in response.json():
                response.failure(f"list: {response.status_code} {response.text[:200]}")

    @task(1)
    def start_again(self) -> None:
        if not self.started:
            return
        order_id = random.choice(self.started)
        with self.client.post(
            "/v1/executions",
            json={"workflow": WORKFLOW, "input": {}, "id": order_id},
            headers=self.headers,
            name="start existing order",
            catch_response=True,
        ) as response:
            if response.status_code != 200 or response.json().get("created") is not False:
                response.failure(f"start again: {response.status_code} {response.text[:200]}")
