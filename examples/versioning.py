import zart


@zart.step("renewal-charge")
def charge(customer: str) -> str:
    return f"charged {customer}"


@zart.step("renewal-receipt")
def send_receipt(customer: str) -> str:
    return f"receipt sent to {customer}"


@zart.step("renewal-extend")
def extend(customer: str) -> str:
    return f"extended the subscription of {customer}"


@zart.workflow("renewal")
async def renewal(customer: str) -> list:
    done = [await charge(customer)]
    # Added in version 2. Version 1 went from the charge straight to the grace period: the renewals
    # it started that are still in their grace period recorded the sleep here, so `patched` is False
    # for them and they go on as version 1 did. Every other renewal records the patch and sends it.
    if zart.patched("send-receipt"):
        done.append(await send_receipt(customer))
    await zart.sleep("grace-period", "1s")
    done.append(await extend(customer))
    return done


if __name__ == "__main__":
    with zart.Worker():
        handle = zart.start(renewal, "ada", id="renewal-ada")
        print(handle.result(timeout=30))
        print([entry.key for entry in handle.steps()])
