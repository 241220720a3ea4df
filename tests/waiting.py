"""Waiting for I/O in flight (real HTTP to a local server) to produce a result; never used to let time pass."""
from __future__ import annotations

import asyncio
import inspect
from typing import Any, Callable


async def until(condition: Callable[[], Any], *, timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll `condition()` (sync or async) until it is truthy and return its value; fail after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)
