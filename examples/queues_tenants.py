import time

import zart

# 2 exports at once in all, and at most 1 per tenant: one tenant's backlog cannot take every slot.
exports = zart.Queue("ex-q-exports", concurrency=2, per_key=1)


@zart.step("ex-q-export-table")
def export_table(tenant: str, table: str, rows: int) -> str:
    time.sleep(rows / 1000)  # 1 ms a row
    return f"{tenant}/{table}.csv"


@zart.workflow("ex-q-export", queue=exports)
async def export(job: dict) -> str:
    return await export_table(job["tenant"], job["table"], job["rows"])


if __name__ == "__main__":
    jobs = [
        ("acme", "users", 100),
        ("acme", "orders", 100),
        ("acme", "items", 100),
        ("acme", "logs", 100),
        ("globex", "users", 300),
        ("initech", "users", 100),
    ]
    # Queued in this order, before any worker runs; the key is the tenant.
    handles = [
        zart.start(
            export,
            {"tenant": tenant, "table": table, "rows": rows},
            key=tenant,
            id=f"export-{tenant}-{table}",
        )
        for tenant, table, rows in jobs
    ]
    with zart.Worker():
        print(sorted(handle.result(timeout=30) for handle in handles))
    began = sorted((handle.info().started_at, handle.info().input["tenant"]) for handle in handles)
    print("began in this order:", [tenant for _, tenant in began])
