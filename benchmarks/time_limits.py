"""What a time limit costs a call: none, ``asyncio.timeout``, or :class:`TimeLimits`.

Each row awaits ``--calls`` calls one after another and gives the microseconds per call of
CPU (``time.process_time``) and of wall time: first a coroutine that only yields to the
loop once (the limit's own cost, nothing else), then a Redis ``PING`` through redis-py (the
kind of call RedisMemory limits with ``socket_timeout``). The best of ``--rounds`` rounds;
the three ways alternate within each round.

Run ``python -m benchmarks.time_limits --help``.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import typer

from bruno_memstore.time_limits import TimeLimits

app = typer.Typer(add_completion=False)

LIMIT = 5.0
"""Seconds: long enough that no call here reaches it."""


async def _yield_once() -> None:
    await asyncio.sleep(0)


def _ways(limits: TimeLimits) -> dict[str, Callable[[Callable[[], Awaitable[Any]]], Any]]:
    async def bare(call: Callable[[], Awaitable[Any]]) -> Any:
        return await call()

    async def timeout(call: Callable[[], Awaitable[Any]]) -> Any:
        async with asyncio.timeout(LIMIT):
            return await call()

    async def within(call: Callable[[], Awaitable[Any]]) -> Any:
        return await limits.within(LIMIT, call())

    return {"no limit": bare, "asyncio.timeout": timeout, "TimeLimits.within": within}


async def _time(calls: int, way: Any, call: Callable[[], Awaitable[Any]]) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(calls):
        await way(call)
    return (
        (time.process_time() - cpu) / calls * 1e6,
        (time.perf_counter() - wall) / calls * 1e6,
    )


async def measure(url: str, calls: int, rounds: int) -> list[tuple[str, str, float, float]]:
    """``(call, way, CPU µs, wall µs)`` rows, the best round of each."""
    import redis.asyncio as aioredis

    ways = _ways(TimeLimits())
    client = aioredis.Redis.from_url(url)
    targets: dict[str, Callable[[], Awaitable[Any]]] = {
        "yield once": _yield_once,
        "Redis PING": client.ping,
    }
    best: dict[tuple[str, str], tuple[float, float]] = {}
    try:
        await client.ping()
        for _ in range(rounds):
            for target, call in targets.items():
                for name, way in ways.items():
                    cpu, wall = await _time(calls, way, call)
                    old = best.get((target, name))
                    best[(target, name)] = (
                        (cpu, wall) if old is None else (min(old[0], cpu), min(old[1], wall))
                    )
    finally:
        await client.aclose()
    return [(target, way, cpu, wall) for (target, way), (cpu, wall) in best.items()]


@app.command()
def main(
    url: Annotated[str, typer.Argument(help="a Redis server")] = "redis://127.0.0.1:6379/0",
    calls: Annotated[int, typer.Option(help="calls timed per row and round")] = 20_000,
    rounds: Annotated[int, typer.Option(help="rounds; each row gives its best")] = 3,
) -> None:
    """Print the table."""
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    rows = asyncio.run(measure(url, calls, rounds))
    print(f"| call ({calls:,} a round, best of {rounds}) | limit | CPU µs | wall µs |")
    print("| --- | --- | ---: | ---: |")
    for target, way, cpu, wall in rows:
        print(f"| {target} | {way} | {cpu:.2f} | {wall:.2f} |")


if __name__ == "__main__":
    app()
