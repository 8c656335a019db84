import random

import zart


@zart.step("roll-dice")
def roll_dice() -> int:
    return random.randint(1, 6)  # random numbers, clocks, I/O: in steps, where they are recorded


@zart.step("pay-prize")
def pay_prize(player: str, roll: int) -> str:
    return f"{player} wins {roll * 10} coins"


@zart.workflow("dice-game")
async def dice_game(player: str) -> dict:
    # Not `roll = random.randint(1, 6)` here: a replay would roll again, maybe take the other
    # branch, and reach a step the history does not have (NonDeterminismError).
    roll = await roll_dice()
    if roll >= 4:
        return {"roll": roll, "prize": await pay_prize(player, roll)}
    return {"roll": roll, "prize": None}


if __name__ == "__main__":
    with zart.Worker():
        result = zart.start(dice_game, "ada", id="dice-1").result(timeout=30)
        print(result)
        print(zart.get("dice-1").result() == result)  # recorded: the same on every read
