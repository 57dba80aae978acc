"""TimeLimits: one timer per loop, each call cut off at its own time, as asyncio.timeout would."""

from __future__ import annotations

import asyncio
import time

import pytest

from bruno_memstore.time_limits import TimeLimits


async def _sleep(seconds: float, result: object = "done") -> object:
    await asyncio.sleep(seconds)
    return result


async def test_a_call_within_its_time_returns_its_result() -> None:
    assert await TimeLimits().within(5.0, _sleep(0, 42)) == 42


async def test_a_call_past_its_time_raises_timeout_error_at_its_deadline() -> None:
    limits = TimeLimits()
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await limits.within(0.2, _sleep(10))
    assert 0.19 <= time.monotonic() - started < 1.0
    # The task is left as it was: not still being cancelled.
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    assert await limits.within(5.0, _sleep(0.01)) == "done"


async def test_concurrent_calls_each_end_at_their_own_deadline() -> None:
    limits = TimeLimits()
    started = time.monotonic()
    ended: dict[float, float] = {}

    async def one(limit: float) -> object:
        try:
            return await limits.within(limit, _sleep(0.9))
        finally:
            ended[limit] = time.monotonic() - started

    results = await asyncio.gather(
        *(one(limit) for limit in (0.6, 0.2, 0.4, 2.0, 5.0)), return_exceptions=True
    )
    assert [type(r).__name__ for r in results] == [
        "TimeoutError",
        "TimeoutError",
        "TimeoutError",
        "str",
        "str",
    ]
    for limit in (0.2, 0.4, 0.6):
        assert limit - 0.01 <= ended[limit] < limit + 0.15, ended
    assert ended[2.0] >= 0.89 and ended[5.0] >= 0.89


async def test_a_shorter_limit_than_those_under_way_still_ends_on_time() -> None:
    limits = TimeLimits()
    slow = asyncio.ensure_future(limits.within(5.0, _sleep(0.5)))
    await asyncio.sleep(0.01)  # the timer is armed for the 5 s call
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await limits.within(0.1, _sleep(10))
    assert time.monotonic() - started < 0.4
    assert await slow == "done"


async def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    limits = TimeLimits()
    task = asyncio.ensure_future(limits.within(5.0, _sleep(10)))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_an_awaitable_that_raises_keeps_its_error() -> None:
    async def fails() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await TimeLimits().within(5.0, fails())


def test_it_follows_its_caller_from_one_event_loop_to_the_next() -> None:
    limits = TimeLimits()
    for _ in range(3):
        assert asyncio.run(limits.within(5.0, _sleep(0, "ok"))) == "ok"

    async def times_out() -> None:
        await limits.within(0.05, _sleep(10))

    with pytest.raises(TimeoutError):
        asyncio.run(times_out())
