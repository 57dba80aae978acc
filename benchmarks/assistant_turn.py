"""What bruno-core's ``BaseAssistant`` asks of a memory on each turn, timed call by call.

A turn is ``get_context(user, conversation)`` (the context read before a reply), then
``store_message(question, conversation)`` and ``store_message(answer, conversation)`` (the
two-argument form the assistant uses). Per backend URL (``embedding_model=None``), one
conversation is seeded with ``--history`` messages, then ``--turns`` turns run one after
another; the table gives the p50 of each call and of the whole turn, in microseconds.

``--tree`` (repeatable) names other checkouts' ``src`` directories to measure beside this
one: each round runs one subprocess per tree, in turn, the first tree changing every round;
the table gives each tree's median over the rounds.

Run ``python -m benchmarks.assistant_turn --help``.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Annotated, Any

import typer

from .trees import HERE, run_in_tree

app = typer.Typer(add_completion=False)

PHASES = ("get_context", "store question", "store answer", "turn")


async def _measure(url: str, history: int, turns: int) -> dict[str, float]:
    from bruno_core.models import Message, MessageRole

    from bruno_memstore import open_memory

    with tempfile.TemporaryDirectory(prefix="bruno-turn-") as tmp:
        target = url if url != "sqlite" else f"sqlite:///{tmp}/turn.db"
        options: dict[str, Any] = {"embedding_model": None}
        if target.startswith("redis"):
            options["prefix"] = f"turn-{uuid.uuid4().hex[:8]}"
        memory = open_memory(target, **options)
        await memory.initialize()
        user, conv = f"user-{uuid.uuid4().hex[:8]}", f"conv-{uuid.uuid4().hex[:8]}"
        try:
            await memory.get_context(user, conv)
            seed = [
                Message(
                    role=MessageRole.USER if i % 2 == 0 else MessageRole.ASSISTANT,
                    content=f"earlier message {i} about the weather and the garden",
                )
                for i in range(history)
            ]
            await memory.store_messages(seed, conversation_id=conv, user_id=user)
            times: dict[str, list[float]] = {p: [] for p in PHASES}
            for i in range(turns):
                question = Message(role=MessageRole.USER, content=f"question {i} of the user")
                answer = Message(role=MessageRole.ASSISTANT, content=f"answer {i} to it")
                t0 = time.perf_counter()
                await memory.get_context(user, conv)
                t1 = time.perf_counter()
                await memory.store_message(question, conv)
                t2 = time.perf_counter()
                await memory.store_message(answer, conv)
                t3 = time.perf_counter()
                for phase, took in zip(PHASES, (t1 - t0, t2 - t1, t3 - t2, t3 - t0), strict=True):
                    times[phase].append(took * 1e6)
            if target.startswith("postgres") or target.startswith("mysql"):
                await memory.forget_user(user)
        finally:
            await memory.shutdown()
    return {p: statistics.median(v) for p, v in times.items()}


@app.command()
def main(
    urls: Annotated[
        list[str] | None, typer.Argument(help="backend URLs; 'sqlite' for a temporary file")
    ] = None,
    history: Annotated[int, typer.Option(help="messages in the conversation at the start")] = 100,
    turns: Annotated[int, typer.Option(help="turns timed per run")] = 1000,
    rounds: Annotated[int, typer.Option(help="runs per tree and URL")] = 3,
    tree: Annotated[
        list[str] | None, typer.Option(help="another checkout's src directory to compare")
    ] = None,
    one: Annotated[bool, typer.Option(hidden=True)] = False,
) -> None:
    """Time the assistant's turn; see the module docstring."""
    targets = urls or ["sqlite"]
    if one:  # a subprocess's single run, on whatever bruno_memstore its path imports
        print(json.dumps(asyncio.run(_measure(targets[0], history, turns))))
        return
    trees = [HERE, *(str(Path(t).resolve()) for t in tree or [])]
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    runs: dict[tuple[str, str], list[dict[str, float]]] = {}
    for r in range(rounds):
        order = trees[r % len(trees) :] + trees[: r % len(trees)]
        for url in targets:
            for t in order:
                runs.setdefault((url, t), []).append(_subprocess(t, url, history, turns))
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{turns} turns a run, {history} messages of history, {rounds} rounds; p50 µs")
    print("| backend | tree | " + " | ".join(PHASES) + " |")
    print("|---|---|" + "---:|" * len(PHASES))
    for (url, t), rs in runs.items():
        cells = " | ".join(f"{statistics.median(x[p] for x in rs):.0f}" for p in PHASES)
        print(f"| {url} | {t} | {cells} |")


def _subprocess(src: str, url: str, history: int, turns: int) -> dict[str, float]:
    args = ["--one", "--history", str(history), "--turns", str(turns), url]
    return run_in_tree(src, "benchmarks.assistant_turn", args)


if __name__ == "__main__":
    app()
