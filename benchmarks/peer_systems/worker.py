"""Measure one system, on commands from ``benchmarks.peers`` (one JSON object per line).

Run as ``python -m benchmarks.peer_systems.worker`` with the system's interpreter, from the
project's root. Commands on stdin, replies on stdout, one line each:

* ``{"cmd": "open", "spec": {...}}`` builds the data set and opens the system; the reply
  holds the package versions, the data set's fingerprint and the system's notes;
* ``{"cmd": "measure", "phase": P}`` with ``P`` one of :data:`PHASES`;
* ``{"cmd": "close"}``.

A reply is ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "..."}``. What the
libraries print goes to stderr. Standard library only.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import json
import math
import os
import platform
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from .contract import PeerSystem, Row
from .data import DataSet

PHASES = ("store_one", "store_concurrent", "read_last", "search")
WRITERS = 32
LAST_N = 20
SEARCH_LIMIT = 10


@dataclass(frozen=True)
class Params:
    """Sizes and time caps of a run."""

    users: int = 10
    store_cap_s: float = 10.0  # per timed store phase; the rest is loaded untimed
    reads: int = 1000
    read_cap_s: float = 4.0
    searches: int = 200
    search_cap_s: float = 4.0


def p50(values: Sequence[float]) -> float | None:
    """Nearest-rank median."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(len(ordered) / 2) - 1)]


def _error(e: BaseException) -> str:
    return f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"


class Measurer:
    """Runs the phases on one system with one data set."""

    def __init__(self, system: PeerSystem, params: Params) -> None:
        self.system = system
        self.params = params
        self.data = DataSet(params.users)

    async def _fresh(self) -> list[Any]:
        await self.system.empty()
        await self.system.prepare([c[0] for c in self.data.conversations.values()])
        return [self.system.native(m) for m in self.data.messages]

    async def store_one(self) -> dict[str, Any]:
        """One ``store`` awaited after another, into an empty store (time-capped)."""
        s, msgs = self.system, self.data.messages
        natives = await self._fresh()
        gc.collect()
        done = errors = 0
        first_error = None
        cpu0, t0 = time.process_time(), time.perf_counter()
        for native, m in zip(natives, msgs, strict=True):
            try:
                await s.store(native, m)
            except Exception as e:
                errors += 1
                first_error = first_error or _error(e)
            done += 1
            if done % 16 == 0 and time.perf_counter() - t0 > self.params.store_cap_s:
                break
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        if done < len(msgs):
            await s.load(natives[done:], msgs[done:])
        await s.settle()
        return {
            "timed": done,
            "rate": done / elapsed,
            "client_cpu_us": cpu / done * 1e6,
            "errors": errors,
            "first_error": first_error,
            "read_back": await self.read_back(),
        }

    async def store_concurrent(self) -> dict[str, Any]:
        """``WRITERS`` tasks storing at once, each its own conversations in order (time-capped)."""
        s = self.system
        if not s.concurrent:
            return {"skipped": "the client takes one call at a time"}
        natives = await self._fresh()
        native_of = {m.index: n for n, m in zip(natives, self.data.messages, strict=True)}
        shares = list(self.data.writer_shares(WRITERS))
        left: list[list[Any]] = []
        state = {"done": 0, "errors": 0, "first_error": None}
        cap = self.params.store_cap_s

        async def writer(share: list[Any]) -> None:
            for k, m in enumerate(share):
                if time.perf_counter() - t0 > cap:
                    left.append(share[k:])
                    return
                try:
                    await s.store(native_of[m.index], m)
                except Exception as e:
                    state["errors"] += 1
                    state["first_error"] = state["first_error"] or _error(e)
                state["done"] += 1

        gc.collect()
        cpu0, t0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(writer(share) for share in shares))
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        rest = sorted((m for share in left for m in share), key=lambda m: m.index)
        if rest:
            await s.load([native_of[m.index] for m in rest], rest)
        await s.settle()
        done = state["done"]
        return {
            "timed": done,
            "rate": done / elapsed,
            "client_cpu_us": cpu / done * 1e6,
            "errors": state["errors"],
            "first_error": state["first_error"],
            "read_back": await self.read_back(),
        }

    async def read_back(self) -> dict[str, Any]:
        """Every conversation read whole and compared with the data (untimed)."""
        exact = wrong = 0
        for conversation in self.data.conversations.values():
            want = [(m.role, m.content, m.turn) for m in conversation]
            got = self.system.rows(await self.system.everything(conversation[0]))
            if got == want:
                exact += 1
            else:
                wrong += 1
        return {
            "conversations_exact": exact,
            "conversations_wrong": wrong,
            "count": await self.system.count(),
            "expected": len(self.data.messages),
        }

    async def _timed_calls(
        self,
        calls: Sequence[Any],
        run: Callable[[Any], Awaitable[Any]],
        judge: Callable[[Any, list[Row]], str],
        cap: float,
    ) -> dict[str, Any]:
        """Time ``run(call)`` one call at a time; ``judge`` names each result's verdict."""
        warm = time.perf_counter()
        for call in calls[:10]:  # warm-up: up to 10 calls or 1 s
            await run(call)
            if time.perf_counter() - warm > 1.0:
                break
        gc.collect()
        latencies: list[float] = []
        verdicts: dict[str, int] = {}
        cpu = 0.0
        start = time.perf_counter()
        for call in calls:
            c0, t0 = time.process_time(), time.perf_counter_ns()
            result = await run(call)
            latencies.append((time.perf_counter_ns() - t0) / 1e3)
            cpu += time.process_time() - c0
            verdict = judge(call, self.system.rows(result))
            verdicts[verdict] = verdicts.get(verdict, 0) + 1
            if time.perf_counter() - start > cap:
                break
        return {
            "calls": len(latencies),
            "p50_us": p50(latencies),
            "client_cpu_us": cpu / len(latencies) * 1e6,
            "verdicts": verdicts,
        }

    async def read_last(self) -> dict[str, Any]:
        """The last ``LAST_N`` messages of a random conversation, checked against the data."""
        convs = self.data.conversations

        def judge(name: str, got: list[Row]) -> str:
            whole = [(m.role, m.content, m.turn) for m in convs[name]]
            if got == whole[-LAST_N:]:
                return "exact"
            if got == whole[:LAST_N]:
                return "oldest"
            if [g[:2] for g in got] == [w[:2] for w in whole[-LAST_N:]]:
                return "metadata lost"
            return "wrong"

        return await self._timed_calls(
            self.data.read_picks(self.params.reads),
            lambda name: self.system.last(convs[name][0], LAST_N),
            judge,
            self.params.read_cap_s,
        )

    async def search(self) -> dict[str, Any]:
        """One word, ``SEARCH_LIMIT`` hits; each hit must hold the word, and as many as exist."""
        scope = self.system.search_scope
        if scope is None:
            return {"skipped": "no search API"}

        def judge(call: tuple[str, str], got: list[Row]) -> str:
            user, word = call
            if any(word not in row[1].split(" ") for row in got):
                return "hit without the word"
            holding = self.data.holding(word, user if scope == "user" else None)
            return "ok" if len(got) == min(SEARCH_LIMIT, holding) else "wrong count"

        result = await self._timed_calls(
            self.data.search_picks(self.params.searches),
            lambda call: self.system.search(call[0], call[1], SEARCH_LIMIT),
            judge,
            self.params.search_cap_s,
        )
        return {**result, "scope": scope}


def open_system(spec: dict[str, Any]) -> PeerSystem:
    """The system ``spec["adapter"]`` (``module:Class`` in this package) on its target."""
    module, cls = spec["adapter"].split(":")
    return getattr(importlib.import_module(f"{__package__}.{module}"), cls)(spec["target"])


def versions(packages: Sequence[str]) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in packages:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


class Session:
    """The worker's state between commands."""

    def __init__(self) -> None:
        self.measurer: Measurer | None = None

    async def handle(self, cmd: dict[str, Any]) -> Any:
        if cmd["cmd"] == "open":
            spec = cmd["spec"]
            system = open_system(spec)
            self.measurer = Measurer(system, Params(**spec.get("params", {})))
            await system.open()
            return {
                "versions": versions(system.packages),
                "fingerprint": self.measurer.data.fingerprint(),
                "search_scope": system.search_scope,
                "notes": system.notes,
            }
        assert self.measurer is not None, "open first"
        if cmd["cmd"] == "measure":
            if cmd["phase"] not in PHASES:
                raise ValueError(f"unknown phase {cmd['phase']!r}")
            return await getattr(self.measurer, cmd["phase"])()
        if cmd["cmd"] == "close":
            await self.measurer.system.close()
            return None
        raise ValueError(f"unknown command {cmd['cmd']!r}")


def main() -> None:
    """Serve commands until ``close`` or the end of stdin."""
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # whatever the libraries print lands on stderr
    sys.stdout = sys.stderr
    loop = asyncio.new_event_loop()
    session = Session()
    try:
        for line in sys.stdin:
            cmd = json.loads(line)
            try:
                reply = {"ok": True, "result": loop.run_until_complete(session.handle(cmd))}
            except Exception as e:
                traceback.print_exc()
                reply = {"ok": False, "error": _error(e)}
            replies.write(json.dumps(reply, default=str) + "\n")
            if cmd["cmd"] == "close":
                break
    finally:
        loop.close()


if __name__ == "__main__":
    main()
