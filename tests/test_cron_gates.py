"""The cron runner's status-write gates (cron/gates.py): a burst's creates go out first, writes still keep moving."""
from __future__ import annotations

import asyncio

from burstflow.cron.gates import StatusWriteGates


async def passes(gates: StatusWriteGates, *, gated: bool) -> bool:
    """Whether a writer of this kind gets through now (without waiting for anything else to happen)."""
    task = asyncio.ensure_future(gates.wait(gated=gated))
    for _ in range(3):  # a few turns of the event loop, no wall-clock wait
        await asyncio.sleep(0)
    if task.done():
        return True
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return False


async def test_every_writer_passes_while_no_decision_is_queued():
    gates = StatusWriteGates(workers=3, queue_empty=lambda: True)
    assert await passes(gates, gated=True) and await passes(gates, gated=False)


async def test_while_decisions_are_queued_only_the_ungated_writer_passes_once_per_workers_decisions():
    queued = [True]
    gates = StatusWriteGates(workers=3, queue_empty=lambda: not queued[0])
    assert not await passes(gates, gated=True)
    assert await passes(gates, gated=False)  # the first write may go at once
    assert not await passes(gates, gated=False)  # then it waits for `workers` decisions to be taken
    for _ in range(2):
        gates.decision_taken()
        assert not await passes(gates, gated=False)
    gates.decision_taken()
    assert await passes(gates, gated=False)
    assert not await passes(gates, gated=True)
    queued[0] = False
    gates.update()
    assert await passes(gates, gated=True) and await passes(gates, gated=False)
