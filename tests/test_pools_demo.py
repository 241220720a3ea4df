"""The pool demo end to end: pods created through the API, the API calling the webhook over HTTPS, counted per pool."""
from __future__ import annotations

from burstflow.demo.pools import run_pool_demo


async def test_demo_places_30_pods_in_pool_order():
    lines: list[str] = []
    counts = await run_pool_demo(pods=30, print_fn=lines.append)
    assert counts == {"own-nodes": 5, "vci": 25, "overflow": 0}
    assert lines[-1] == "status.summary: own-nodes 5/5, vci 25/100, overflow 0/-, unplaced 0"
