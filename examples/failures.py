import zart


@zart.step("check-stock")
def check_stock(sku: str) -> int:
    raise LookupError(f"unknown sku {sku!r}")


@zart.workflow("stock-report")
async def stock_report(sku: str) -> dict:
    try:
        return {"sku": sku, "count": await check_stock(sku)}
    except zart.StepFailed as failure:  # the step's error, as recorded
        return {"sku": sku, "error": [failure.step_key, failure.error_type, failure.message]}


@zart.workflow("strict-stock-report")
async def strict_stock_report(sku: str) -> dict:
    return {"sku": sku, "count": await check_stock(sku)}  # StepFailed is not caught here


if __name__ == "__main__":
    with zart.Worker():
        print(zart.start(stock_report, "X-1", id="stock-report-1").result(timeout=30))

        handle = zart.start(strict_stock_report, "X-1", id="strict-stock-report-1")
        try:
            handle.result(timeout=30)
        except zart.WorkflowFailed as failed:
            print(handle.status(), "|", failed.error_type, "|", failed.message)
        print(sorted(handle.info().error))  # the error as stored
