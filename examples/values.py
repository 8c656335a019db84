import dataclasses
from datetime import date

import zart


@dataclasses.dataclass
class Invoice:
    number: str
    issued: date
    lines: tuple


@zart.step("issue-invoice")
def issue_invoice(number: str) -> Invoice:
    return Invoice(number, date(2024, 5, 1), ("widget", "gadget"))


@zart.step("archive-invoice")
def archive_invoice(invoice: dict) -> str:
    return f"archived {invoice['number']} of {invoice['issued']}"


@zart.workflow("invoice")
async def invoice(number: str) -> dict:
    issued = await issue_invoice(number)  # the decoded JSON: a dict, on the first run and on replay
    archived = await archive_invoice(issued)
    return {"type": type(issued).__name__, "invoice": issued, "archived": archived}


@zart.workflow("invoice-with-a-set")
async def invoice_with_a_set(number: str) -> str:
    return await archive_invoice({"number": number, "tags": {"a", "b"}})  # a set is not JSON


if __name__ == "__main__":
    with zart.Worker():
        print(zart.start(invoice, "INV-7", id="invoice-7").result(timeout=30))

        try:
            zart.start(invoice_with_a_set, "INV-8", id="invoice-8").result(timeout=30)
        except zart.WorkflowFailed as failed:
            print(failed.error_type, "|", failed.message)

        try:
            zart.start(invoice, b"INV-9")  # bytes are not JSON either: nothing is started
        except zart.SerializationError as error:
            print(error)
