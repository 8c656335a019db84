import pytest
import trio
import zart

import shop


@pytest.fixture(scope="module")
def worker():
    with zart.Worker() as running:  # on $ZART_DATABASE_URL: point it at a test database
        yield running


def test_order_completes(worker):
    handle = zart.start(shop.order, {"order_id": "t1", "amount": 1.0})
    assert handle.result(timeout=30) == {
        "reservation": "reservation-t1",
        "txn": f"txn-{handle.id}/charge-card#1",
    }


def test_a_step_called_outside_a_workflow_is_a_plain_call():
    assert trio.run(shop.reserve_stock, "t2") == "reservation-t2"  # no database, no checkpoint
