"""MongoMemory when its server goes away: a restart under load loses no acknowledged message
and stores none twice, on both emulators (so both write modes: SecantusDB's transactions and
nx-27017's ordered writes). A server down at start is in ``tests/backends/test_mongo.py``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bruno_memstore.backends.mongo import MongoMemory

from ._load_harness import PATIENT, stored_once, under_load
from ._mongo_server import MongoEmulator


@pytest.fixture(params=["secantus", "nx"], ids=["secantus-emulator", "nx-emulator"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MongoEmulator]:
    emulator = MongoEmulator(request.param, tmp_path / request.param)
    emulator.start()
    yield emulator
    emulator.stop()


@pytest.mark.parametrize("crash", [False, True], ids=["restart", "kill"])
async def test_restart_under_load_keeps_every_acknowledged_store_once(
    server: MongoEmulator, crash: bool
) -> None:
    memory = MongoMemory(server.url, connect_timeout=1.0, retry=PATIENT, embedding_model=None)
    await memory.initialize()
    assert memory.transactions is (server.kind == "secantus")
    load = await under_load(
        memory, lambda: server.restart(crash=crash), writers=8, conversations=3, progress=30
    )
    assert not load.failed, load.failed[:3]  # retries bridged the restart
    await stored_once(memory, load.acked)
    await memory.shutdown()
