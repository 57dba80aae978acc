"""Where a Redis window read spends its time: the server's share, step by step.

A conversation of ``--messages`` messages is stored, then ``--calls`` reads of its newest
``--window`` are timed: the server's microseconds per call (``INFO commandstats``, reset
before each row) for the read script and for scripts that stop after each of its steps
(the prelude, the owner lookup, the order range, the bodies), beside ``return 1`` and a
native ``LRANGE`` of as many bodies of the same size; and the client's wall time per call
for the primitive (``_read_window``) and for ``retrieve_context``.

The server's figures count every client's calls: run it on a Redis nothing else uses.

Run ``python -m benchmarks.redis_read_costs --help``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import redis
import typer

app = typer.Typer(add_completion=False)

# Each step's script: the read script's prelude, then its first steps (ARGV as it gets them).
_STEPS = {
    "prelude, then return 1": "return 1",
    "+ owner (GET, expiry check)": "return conversation_owner(ARGV[2])",
    "+ order range (ZRANGE)": (
        "local o = conversation_owner(ARGV[2])\n"
        "return redis.call('ZRANGE', ckey(ukey(o), ARGV[2], 'o'), -tonumber(ARGV[4]), -1)"
    ),
    "+ bodies (HMGET)": (
        "local o = conversation_owner(ARGV[2])\n"
        "local u = ukey(o)\n"
        "local m = redis.call('ZRANGE', ckey(u, ARGV[2], 'o'), -tonumber(ARGV[4]), -1)\n"
        "return bodies_of(ckey(u, ARGV[2], 'b'), m, 1, #m)"
    ),
}


def _server_us(client: redis.Redis, command: str, calls: int, call: Callable[[], Any]) -> float:
    client.config_resetstat()
    for _ in range(calls):
        call()
    stats = client.info("commandstats")[f"cmdstat_{command}"]
    return float(stats["usec"]) / int(stats["calls"])


async def _wall_us(calls: int, call: Callable[[], Awaitable[Any]]) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        await call()
    return (time.perf_counter() - start) / calls * 1e6


async def measure(url: str, messages: int, window: int, calls: int) -> list[tuple[str, float]]:
    """``(what, microseconds per call)`` rows: the server's, then the client's wall time."""
    from bruno_memstore.backends.redis import RedisMemory, scripts
    from bruno_memstore.lifecycle import archive_marker
    from bruno_memstore.testing import at, make_message, new_conversation_id, new_user_id

    memory = RedisMemory(url, prefix=f"bench-read-{uuid.uuid4().hex[:8]}", embedding_model=None)
    client = redis.Redis.from_url(url)
    uid, conv = new_user_id(), new_conversation_id()
    rows: list[tuple[str, float]] = []
    try:
        await memory.initialize()
        texts = [" ".join(["word"] * 40) + f" {i}" for i in range(messages)]
        batch = [make_message(text, timestamp=at(i)) for i, text in enumerate(texts)]
        await memory.store_messages(batch, conversation_id=conv, user_id=uid)
        body = scripts.SCRIPTS["read_conversation"]
        whole = scripts.source(body)
        prelude = whole[: len(whole) - len(body)]
        args = [memory.keys.prefix, conv, uid, window, archive_marker(conv)]
        expected = await memory._read_window(conversation_id=conv, user_id=uid, limit=window)
        sha = client.script_load(whole)
        reply = client.evalsha(sha, 0, *args)
        assert len(reply[2]) == len(expected) == min(window, messages), "the window read back"
        rows.append(
            (
                "server: the read script",
                _server_us(client, "evalsha", calls, lambda: client.evalsha(sha, 0, *args)),
            )
        )
        for name, step in _STEPS.items():
            step_sha = client.script_load(prelude + step)
            rows.append(
                (
                    f"server: {name}",
                    _server_us(
                        client, "evalsha", calls, lambda s=step_sha: client.evalsha(s, 0, *args)
                    ),
                )
            )
        bare = client.script_load("return 1")
        rows.append(
            (
                "server: return 1, no prelude",
                _server_us(client, "evalsha", calls, lambda: client.evalsha(bare, 0)),
            )
        )
        native = f"bench-read-list-{uuid.uuid4().hex}"
        client.rpush(native, *reply[2])
        try:
            rows.append(
                (
                    "server: LRANGE of the same bodies",
                    _server_us(client, "lrange", calls, lambda: client.lrange(native, -window, -1)),
                )
            )
        finally:
            client.delete(native)
        rows.append(
            (
                "client wall: _read_window",
                await _wall_us(
                    calls,
                    lambda: memory._read_window(conversation_id=conv, user_id=uid, limit=window),
                ),
            )
        )
        rows.append(
            (
                "client wall: retrieve_context",
                await _wall_us(
                    calls, lambda: memory.retrieve_context(uid, conversation_id=conv, limit=window)
                ),
            )
        )
    finally:
        await memory.forget_user(uid)
        await memory.shutdown()
        client.close()
    return rows


@app.command()
def main(
    url: Annotated[
        str, typer.Argument(help="a Redis nothing else uses")
    ] = "redis://127.0.0.1:6379/0",
    messages: Annotated[int, typer.Option(help="messages in the conversation")] = 200,
    window: Annotated[int, typer.Option(help="messages per read")] = 20,
    calls: Annotated[int, typer.Option(help="calls timed per row")] = 3000,
) -> None:
    """Print the table."""
    rows = asyncio.run(measure(url, messages, window, calls))
    print(f"| step ({window} of {messages} messages, {calls} calls) | µs per call |")
    print("| --- | ---: |")
    for name, value in rows:
        print(f"| {name} | {value:.1f} |")


if __name__ == "__main__":
    app()
