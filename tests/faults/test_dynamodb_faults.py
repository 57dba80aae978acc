"""DynamoDBMemory when its server goes away: a restart or a kill under load loses no
acknowledged message and stores none twice. The server is dynalite with its tables in
LevelDB files, so they outlive its process (moto keeps them in memory only). A server down
at start is in ``tests/backends/test_dynamodb.py``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import _engines as engines
from bruno_memstore.backends.dynamodb import DynamoDBMemory

from ._dynalite_server import DynaliteServer
from ._load_harness import PATIENT, stored_once, under_load


@pytest.fixture
def server(tmp_path: Path) -> Iterator[DynaliteServer]:
    dynalite = DynaliteServer(tmp_path / "dynalite")
    dynalite.start()
    yield dynalite
    dynalite.stop()


@pytest.mark.parametrize("crash", [False, True], ids=["restart", "kill"])
async def test_restart_under_load_keeps_every_acknowledged_store_once(
    server: DynaliteServer, crash: bool
) -> None:
    memory = DynamoDBMemory(
        "faults",
        region="us-east-1",
        endpoint_url=server.url,
        connect_timeout=1.0,
        retry=PATIENT,
        embedding_model=None,
        **engines.DYNAMODB_KEYS,
    )
    await memory.initialize()
    load = await under_load(
        memory,
        lambda: server.restart(0.5, crash=crash),
        writers=8,
        conversations=3,
        progress=30,
    )
    assert not load.failed, load.failed[:3]  # retries bridged the restart
    await stored_once(memory, load.acked)
    await memory.shutdown()
