import zart

invoicing = zart.Queue("ex-q-invoicing", concurrency=10)


@zart.step("ex-q-render-invoice")
def render_invoice(customer: str, month: str) -> str:
    return f"invoice-{month}-{customer}.pdf"


@zart.workflow("ex-q-invoice", queue=invoicing)
async def invoice(job: dict) -> str:
    return await render_invoice(job["customer"], job["month"])


if __name__ == "__main__":
    customers = [f"c{n}" for n in range(1, 201)]
    ids = [f"invoice-2024-05-{customer}" for customer in customers]
    jobs = [{"customer": customer, "month": "2024-05"} for customer in customers]
    with zart.Worker():
        handles = zart.start_many(invoice, jobs, ids=ids)  # 200 executions: one transaction, one statement
        print(len(handles), handles[0].id, handles[-1].id)
        again = zart.start_many(invoice, jobs, ids=ids)  # the same ids: the same executions, nothing new
        print([handle.id for handle in again] == ids, any(handle.created for handle in again))
        results = [handle.result(timeout=30) for handle in handles]
    print(results[0], results[-1], len(set(results)))
