import asyncio
import os

import psycopg
import zart

# The application's own database is Zart's database: the order and its execution commit together.
DATABASE_URL = os.environ["ZART_DATABASE_URL"]


@zart.step("ex-q-send-confirmation")
def send_confirmation(order_id: int, email: str) -> str:
    return f"confirmed order {order_id} to {email}"


@zart.workflow("ex-q-confirm-order")
async def confirm_order(order: dict) -> str:
    return await send_confirmation(order["id"], order["email"])


def place_order(conn: psycopg.Connection, order_id: int, email: str, card_ok: bool) -> None:
    with conn.transaction():  # one transaction: the order row, the execution, its wake-up
        conn.execute(
            "INSERT INTO shop_orders (id, email) VALUES (%s, %s) ON CONFLICT DO NOTHING", (order_id, email)
        )
        zart.start(confirm_order, {"id": order_id, "email": email}, id=f"confirm-{order_id}", connection=conn)
        if not card_ok:
            raise ValueError(f"card declined for order {order_id}")  # rolls back the order AND the start


async def place_order_async(order_id: int, email: str) -> None:
    async with await psycopg.AsyncConnection.connect(DATABASE_URL) as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO shop_orders (id, email) VALUES (%s, %s) ON CONFLICT DO NOTHING", (order_id, email)
        )
        await zart.astart(
            confirm_order, {"id": order_id, "email": email}, id=f"confirm-{order_id}", connection=conn
        )


if __name__ == "__main__":
    with psycopg.connect(DATABASE_URL) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS shop_orders (id int PRIMARY KEY, email text NOT NULL)")
        conn.commit()
        place_order(conn, 1, "ada@example.com", card_ok=True)
        try:
            place_order(conn, 2, "bob@example.com", card_ok=False)
        except ValueError as error:
            print(error)
    asyncio.run(place_order_async(3, "cy@example.com"))

    with zart.Worker():
        print(zart.get("confirm-1").result(timeout=30))
        print(zart.get("confirm-3").result(timeout=30))
        try:
            zart.get("confirm-2")
        except zart.ExecutionNotFound as error:
            print(error)
    with psycopg.connect(DATABASE_URL) as conn:
        print(conn.execute("SELECT id FROM shop_orders ORDER BY id").fetchall())
