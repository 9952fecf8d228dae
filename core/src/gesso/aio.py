"""One asyncio helper shared by the SDK, the proxy and providers' transports."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def within(pending: Awaitable[T], seconds: float) -> T:
    """``pending`` awaited for at most ``seconds``; past them it is cancelled and ``TimeoutError`` raised (from
    Python 3.11 ``asyncio.TimeoutError`` is ``TimeoutError``). Uses ``asyncio.timeout`` where there is one: no task
    per wait, and a cancellation that arrives just as ``pending`` completes is never lost, as it can be with
    ``asyncio.wait_for`` before Python 3.12 (the proxy cancels a call whose client went away)."""
    if sys.version_info >= (3, 11):
        async with asyncio.timeout(seconds):
            return await pending
    return await asyncio.wait_for(pending, seconds)  # pragma: no cover - Python 3.10
