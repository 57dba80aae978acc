"""CPU per one-at-a-time ``store_message`` on SQLite (no embedding model), in one process.

``store_message(message, user, conversation)`` awaited message after message into a fresh
file (ten conversations of one user, their first message stored untimed), as
``benchmarks.peers`` does; the figures are CPU microseconds per store: the whole process
(``time.process_time``: the event loop's thread, the writer thread and the kernel's work
for them, the commit's ``fsync`` included), the event loop's thread alone
(``time.thread_time``) and the writer thread alone. With ``--synchronous normal`` the
commit does not wait for the disk (WAL mode), which leaves the library's own work and
SQLite's.

``--tree`` (repeatable) names other checkouts' ``src`` directories to measure beside this
one: each round runs one subprocess per tree, in turn, the first tree changing every round,
so that a machine whose load drifts favours none. The table gives each tree's median over
the rounds and every round's figure.

Run ``python -m benchmarks.store_cpu --help``.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from .trees import HERE, run_in_tree

app = typer.Typer(add_completion=False)

CONVERSATIONS = 10


async def _measure(messages: int, synchronous: str) -> dict[str, float]:
    from bruno_core.models import Message, MessageRole

    from bruno_memstore import SQLiteMemory

    with tempfile.TemporaryDirectory(prefix="bruno-store-cpu-") as tmp:
        memory = SQLiteMemory(
            os.path.join(tmp, "cpu.db"), synchronous=synchronous, embedding_model=None
        )
        await memory.initialize()
        try:
            convs = [f"conv-{i}" for i in range(CONVERSATIONS)]
            for conv in convs:  # the conversations exist: the store's common case
                await memory.store_message(
                    Message(role=MessageRole.USER, content="hello"), "user-1", conv
                )
            batch = [
                Message(
                    role=MessageRole.USER if i % 2 == 0 else MessageRole.ASSISTANT,
                    content=f"message number {i} about the weather and the garden",
                    metadata={"turn": i},
                )
                for i in range(messages)
            ]
            writer = _thread_clock(f"{SQLiteMemory.thread_name}-writer")
            gc.collect()
            _callgrind("on")
            cpu0, loop0, t0 = time.process_time(), time.thread_time(), time.perf_counter()
            writer0 = time.clock_gettime(writer)
            for i, message in enumerate(batch):
                await memory.store_message(message, "user-1", convs[i % CONVERSATIONS])
            elapsed = time.perf_counter() - t0
            cpu, loop = time.process_time() - cpu0, time.thread_time() - loop0
            wrote = time.clock_gettime(writer) - writer0
            _callgrind("off")
        finally:
            await memory.shutdown()
    return {
        "cpu_us": cpu / messages * 1e6,
        "loop_us": loop / messages * 1e6,
        "writer_us": wrote / messages * 1e6,
        "rate": messages / elapsed,
    }


def _callgrind(state: str) -> None:
    """Under ``valgrind --tool=callgrind --instr-atstart=no`` with ``BRUNO_CALLGRIND=1``:
    count instructions from here (``on``) or stop (``off``), so that only the stores count."""
    if os.environ.get("BRUNO_CALLGRIND"):
        subprocess.run(["callgrind_control", "-i", state, str(os.getpid())], check=True)


def _thread_clock(name: str) -> int:
    """The CPU clock of the thread called ``name``."""
    (thread,) = (t for t in threading.enumerate() if t.name == name)
    assert thread.ident is not None
    return time.pthread_getcpuclockid(thread.ident)


@app.command()
def main(
    messages: Annotated[int, typer.Option(help="messages stored, one at a time, per run")] = 1500,
    rounds: Annotated[int, typer.Option(help="runs per tree")] = 5,
    synchronous: Annotated[str, typer.Option(help="SQLite's synchronous setting")] = "full",
    tree: Annotated[
        list[str] | None, typer.Option(help="another checkout's src directory to compare")
    ] = None,
    one: Annotated[bool, typer.Option(hidden=True)] = False,
) -> None:
    """Measure CPU per store; see the module docstring."""
    if one:  # a subprocess's single run, on whatever bruno_memstore its path imports
        print(json.dumps(asyncio.run(_measure(messages, synchronous))))
        return
    trees = [HERE, *(str(Path(t).resolve()) for t in tree or [])]
    runs: dict[str, list[dict[str, float]]] = {t: [] for t in trees}
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for r in range(rounds):
        order = trees[r % len(trees) :] + trees[: r % len(trees)]
        for t in order:
            runs[t].append(_subprocess(t, messages, synchronous))
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{messages} stores a run, synchronous={synchronous}, {rounds} rounds")
    print("| tree | CPU/store µs | loop thread µs | writer thread µs | stores/s | CPU per round |")
    print("|---|---:|---:|---:|---:|---|")
    for t in trees:
        rs = runs[t]
        med = {
            k: statistics.median(x[k] for x in rs)
            for k in ("cpu_us", "loop_us", "writer_us", "rate")
        }
        each = ", ".join(f"{x['cpu_us']:.0f}" for x in rs)
        print(
            f"| {t} | {med['cpu_us']:.0f} | {med['loop_us']:.0f} | {med['writer_us']:.0f} "
            f"| {med['rate']:.0f} | {each} |"
        )


def _subprocess(src: str, messages: int, synchronous: str) -> dict[str, Any]:
    args = ["--one", "--messages", str(messages), "--synchronous", synchronous]
    return run_in_tree(src, "benchmarks.store_cpu", args)


if __name__ == "__main__":
    app()
