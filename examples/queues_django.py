"""The outbox start in Django: an order and its confirmation commit together, or neither does.

Django is not a dependency of Zart: this file is linted with the other examples, and
tests/test_examples.py runs it only where Django is installed (`pip install django`, 4.2 or later,
which uses psycopg 3). It is a whole Django program in one file; in a project, `place_order` is a view
or a service function, and `settings.DATABASES` names the database Zart uses.
"""

import os

import django
import zart
from django.conf import settings
from django.db import connection, transaction
from psycopg import conninfo

from queues_outbox import confirm_order


def place_order(order_id: int, email: str, card_ok: bool) -> None:
    with transaction.atomic():
        with connection.cursor() as cursor:  # or Order.objects.create(...): any write, in the transaction
            cursor.execute(
                "INSERT INTO shop_orders (id, email) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                [order_id, email],
            )
        # connection.connection: the psycopg.Connection under Django's, in atomic()'s transaction
        zart.start(
            confirm_order,
            {"id": order_id, "email": email},
            id=f"confirm-{order_id}",
            connection=connection.connection,
        )
        if not card_ok:
            raise ValueError(f"card declined for order {order_id}")  # rolls back the order AND the start


def configure_django(url: str) -> None:
    params = conninfo.conninfo_to_dict(url)
    database = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": params.get("dbname", ""),
        "USER": params.get("user", ""),
        "PASSWORD": params.get("password", ""),
        "HOST": params.get("host", ""),
        "PORT": params.get("port", ""),
    }
    settings.configure(DATABASES={"default": database})
    django.setup()


if __name__ == "__main__":
    configure_django(os.environ["ZART_DATABASE_URL"])
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS shop_orders (id int PRIMARY KEY, email text NOT NULL)")
    place_order(11, "dee@example.com", card_ok=True)
    try:
        place_order(12, "eve@example.com", card_ok=False)
    except ValueError as error:
        print(error)
    with zart.Worker():
        print(zart.get("confirm-11").result(timeout=30))
    try:
        zart.get("confirm-12")
    except zart.ExecutionNotFound as error:
        print(error)
