"""The key gate: a batch holding a key another batch in flight holds waits for it."""

import anyio

from engine.imports.gate import KeyGate


async def test_a_batch_waits_until_the_batch_holding_its_key_is_answered():
    gate, order = KeyGate(), []

    async def later() -> None:
        await gate.wait_clear(["a@x.org", "c@x.org"])
        order.append("later sent")

    gate.hold(["a@x.org", "b@x.org"])
    async with anyio.create_task_group() as tg:
        tg.start_soon(later)
        await anyio.sleep(0.01)
        assert order == [] and not gate.is_clear(["a@x.org"])
        order.append("first answered")
        gate.release(["a@x.org", "b@x.org"])
    assert order == ["first answered", "later sent"]
    assert gate.is_clear(["a@x.org"]) and gate.is_clear(None)
