"""Slow searches of one user against a quick read of another, on SQLite.

Fills a store (once; reused while the file exists) with one heavy user's messages, made of
words drawn from a Zipf-like vocabulary in conversations of 1,000, and a light user's single
conversation. Then, for each kind of slow query, it starts two searches of the heavy user
and, as soon as they are under way, a window read of the light user, and reports:

* the light user's read, alone (median of 20) and while the two searches run;
* how long the searches took.

Queries: ``pasted``, 100,000 characters of distinct words (the first few are common ones);
``common``, the 32 most frequent words of the store (the slowest query within the bounds).

Run ``python -m benchmarks.starvation --help``; it takes about a minute at 50,000 messages.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import time
from pathlib import Path
from typing import Annotated

import typer
from bruno_core.models.message import Message, MessageRole

from bruno_memstore.backends.sqlite import SQLiteMemory

app = typer.Typer(add_completion=False)

HEAVY, LIGHT = "heavy-user", "light-user"
CONVERSATION = 1000
VOCABULARY = 5000


def _vocabulary(rng: random.Random) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    words: dict[str, None] = {}
    while len(words) < VOCABULARY:
        words["".join(rng.choices(letters, k=rng.randint(4, 9)))] = None
    return list(words)


async def _fill(memory: SQLiteMemory, messages: int, vocab: list[str], rng: random.Random) -> None:
    weights = [1.0 / (rank + 1) for rank in range(len(vocab))]
    for start in range(0, messages, CONVERSATION):
        batch = [
            Message(
                role=MessageRole.USER,
                content=" ".join(rng.choices(vocab, weights, k=rng.randint(8, 30))),
            )
            for _ in range(min(CONVERSATION, messages - start))
        ]
        await memory.store_messages(batch, conversation_id=f"heavy-{start}", user_id=HEAVY)
    light = [Message(role=MessageRole.USER, content=f"light {i}") for i in range(50)]
    await memory.store_messages(light, conversation_id="light", user_id=LIGHT)


async def _read_ms(memory: SQLiteMemory) -> float:
    started = time.perf_counter()
    await memory.retrieve_context(LIGHT, conversation_id="light", limit=20)
    return (time.perf_counter() - started) * 1000


async def _under_load(memory: SQLiteMemory, query: str) -> dict[str, float]:
    async def search() -> float:
        started = time.perf_counter()
        await memory.search(HEAVY, query, limit=10, kinds=("message",), mode="keyword")
        return (time.perf_counter() - started) * 1000

    searches = [asyncio.create_task(search()) for _ in range(2)]
    await asyncio.sleep(0.05)  # both searches are on the engine by now
    read = await _read_ms(memory)
    took = await asyncio.gather(*searches)
    return {"read_ms": round(read, 1), "search_ms": round(max(took), 1)}


async def _measure(path: Path, messages: int, fresh: bool) -> dict[str, object]:
    rng = random.Random(7)
    vocab = _vocabulary(rng)
    memory = SQLiteMemory(path, embedding_model=None, synchronous="normal")
    try:
        if fresh:
            await _fill(memory, messages, vocab, rng)
        alone = [await _read_ms(memory) for _ in range(20)]
        pasted = " ".join([*vocab[:5], *(f"pasted{i:06d}" for i in range(100_000 // 13))])
        common = " ".join(vocab[:32])
        return {
            "messages": messages,
            "read_alone_ms": round(statistics.median(alone), 2),
            "pasted": await _under_load(memory, pasted[:100_000]),
            "common": await _under_load(memory, common),
        }
    finally:
        await memory.shutdown()


@app.command()
def main(
    db: Annotated[Path, typer.Option(help="the store (filled when missing)")] = Path(
        "/tmp/bruno-starvation.db"
    ),
    messages: Annotated[int, typer.Option(help="the heavy user's messages")] = 50_000,
) -> None:
    """Print the measurements as JSON."""
    print(json.dumps(asyncio.run(_measure(db, messages, not db.exists())), indent=2))


if __name__ == "__main__":
    app()
