"""The proxy's connect timeout (wfpredirect.cli._proxy._within): the awaited
value, asyncio.TimeoutError after the time, and a cancellation from outside
passed on as such."""

from __future__ import annotations

import asyncio

import pytest

from wfpredirect.cli._proxy import _within


async def value_after(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "value"


def test_the_value_in_time() -> None:
    assert asyncio.run(_within(5, value_after(0))) == "value"


def test_timeout_and_the_task_goes_on() -> None:
    async def body() -> tuple[str, str]:
        try:
            await _within(0.01, value_after(5))
            first = "no timeout"
        except asyncio.TimeoutError:
            first = "timed out"
        # The task is not left cancelled: it can still wait.
        return first, await _within(5, value_after(0))

    assert asyncio.run(body()) == ("timed out", "value")


def test_cancellation_from_outside_is_not_a_timeout() -> None:
    async def body() -> None:
        task = asyncio.create_task(_within(5, value_after(5)))
        await asyncio.sleep(0)
        task.cancel()
        await task

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(body())
