"""MySQLMemory when the server is down, silent, killed, restarted, locked or full.

Each test that breaks the engine runs its own ``mariadbd`` (see ``_mysql_server``); the
shared server on 3306 is never touched.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncmy
import pytest
import pytest_asyncio

from bruno_memstore.backends.mysql import MySQLMemory
from bruno_memstore.backends.sql.steps import Fetch, Plan
from bruno_memstore.errors import BackendError, BackendUnavailableError
from bruno_memstore.retry import RetryPolicy
from bruno_memstore.testing.builders import at, make_message, new_conversation_id, new_user_id

from ._mysql_server import MariaDBServer, free_port
from ._progress import until

pytestmark = pytest.mark.slow

# Long enough to ride out a crash, the crash recovery and the restart.
PATIENT = RetryPolicy(attempts=60, initial_backoff=0.05, max_backoff=0.5, deadline=60.0)


class _Counting(MySQLMemory):
    """Counts the transient driver errors it meets, by MySQL error code."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.transient: Counter[int | str] = Counter()

    def _is_transient(self, exc: BaseException) -> bool:
        verdict = super()._is_transient(exc)
        if verdict:
            code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else type(exc).__name__
            self.transient[code] += 1
        return verdict


@pytest.fixture
def server() -> Iterator[MariaDBServer]:
    srv = MariaDBServer()
    srv.start()
    try:
        yield srv
    finally:
        srv.destroy()


async def _raw(srv: MariaDBServer, user: str = "root", password: str = "") -> Any:
    return await asyncmy.connect(
        host="127.0.0.1",
        port=srv.port,
        user=user,
        password=password,
        database="test",
        autocommit=True,
    )


# ==================================================================== not there at all


async def test_down_at_start_fails_fast_with_a_redacted_url() -> None:
    port = free_port()
    memory = MySQLMemory(f"mysql://app:sekrit@127.0.0.1:{port}/test", connect_timeout=2)
    started = time.monotonic()
    with pytest.raises(BackendUnavailableError) as info:
        await memory.initialize()
    assert time.monotonic() - started < 3
    message = str(info.value)
    assert "sekrit" not in message and "***" in message and str(port) in message
    # Lazy connection on first use reports the same way.
    with pytest.raises(BackendUnavailableError):
        await memory.store_message(make_message("hello"), new_user_id(), new_conversation_id())
    assert not memory.connected


async def test_a_silent_server_is_unavailable_within_the_timeout() -> None:
    async def say_nothing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # accept, never send the handshake
        writer.close()

    port = free_port()
    listener = await asyncio.start_server(say_nothing, "127.0.0.1", port)
    try:
        memory = MySQLMemory(f"mysql://root:pw@127.0.0.1:{port}/test", connect_timeout=1)
        started = time.monotonic()
        with pytest.raises(BackendUnavailableError) as info:
            await memory.initialize()
        assert time.monotonic() - started < 2.5
        assert "pw@" not in str(info.value)
    finally:
        listener.close()
        await listener.wait_closed()


# ==================================================================== crash and restart


async def test_restart_mid_load_keeps_every_acknowledged_store_once(
    server: MariaDBServer,
) -> None:
    memory = _Counting(server.url, retry=PATIENT, operation_timeout=20, connect_timeout=5)
    await memory.initialize()
    uid = new_user_id()
    convs = [new_conversation_id() for _ in range(4)]
    acked: dict[str, str] = {}
    failed: list[BaseException] = []
    stop = asyncio.Event()

    async def writer(w: int) -> None:
        i = 0
        while not stop.is_set():
            conv = convs[(w + i) % len(convs)]
            msg = make_message(f"writer {w} message {i}", timestamp=at(i))
            try:
                await memory.store_message(msg, uid, conv)
            except BackendError as exc:
                failed.append(exc)
            else:
                acked[str(msg.id)] = conv
            i += 1

    writers = [asyncio.create_task(writer(w)) for w in range(16)]
    await until(lambda: len(acked) > 50, "50 stores before the crash")
    before_crash = len(acked)
    await asyncio.to_thread(server.kill)
    await asyncio.sleep(0.5)
    await asyncio.to_thread(server.start)
    await until(lambda: len(acked) > before_crash + 50, "50 stores after the restart")
    stop.set()
    await asyncio.gather(*writers)

    assert before_crash > 50 and len(acked) > before_crash
    assert not failed, failed[:3]  # the retry policy outlasts the restart
    assert memory.transient  # the crash was met, and retried
    conn = await _raw(server)
    try:
        async with conn.cursor() as cur:
            await cur.execute("SELECT id, conversation_id FROM bruno_messages")
            stored = await cur.fetchall()
    finally:
        conn.close()
    counts = Counter(row[0] for row in stored)
    assert all(counts[mid] == 1 for mid in acked)  # present, exactly once
    assert max(counts.values()) == 1
    assert all(dict(stored)[mid] == conv for mid, conv in acked.items())
    for conv in convs:
        window = await memory.retrieve_context(uid, conversation_id=conv, limit=10_000)
        ids = [str(m.id) for m in window]
        assert len(ids) == len(set(ids))
        assert {m for m, c in acked.items() if c == conv} <= set(ids)
    await memory.shutdown()


async def test_down_mid_use_is_reported_then_recovered(server: MariaDBServer) -> None:
    server.sql("CREATE USER 'app'@'%' IDENTIFIED BY 'topsecret'; GRANT ALL ON test.* TO 'app'@'%'")
    memory = MySQLMemory(
        f"mysql://app:topsecret@127.0.0.1:{server.port}/test",
        retry=RetryPolicy(attempts=3, initial_backoff=0.01, max_backoff=0.05, deadline=2),
        operation_timeout=5,
    )
    uid, conv = new_user_id(), new_conversation_id()
    first = make_message("before the outage", timestamp=at(0))
    await memory.store_message(first, uid, conv)
    await asyncio.to_thread(server.stop)
    started = time.monotonic()
    with pytest.raises(BackendUnavailableError) as info:
        await memory.retrieve_messages(conv)
    assert time.monotonic() - started < 10
    assert "topsecret" not in str(info.value)
    await asyncio.to_thread(server.start)
    second = make_message("after the outage", timestamp=at(1))
    await memory.store_message(second, uid, conv)  # same instance, new connections
    assert [m.id for m in await memory.retrieve_messages(conv)] == [second.id, first.id]
    await memory.shutdown()


async def test_killed_connections_are_replaced(server: MariaDBServer) -> None:
    memory = _Counting(server.url, pool_size=4, write_batching=False)
    uid, conv = new_user_id(), new_conversation_id()
    await memory.store_message(make_message("first", timestamp=at(0)), uid, conv)
    await memory.retrieve_messages(conv)
    admin = await _raw(server)
    try:
        async with admin.cursor() as cur:
            # Idle pooled connections killed: the pool notices and opens new ones.
            await cur.execute(
                "SELECT id FROM information_schema.processlist "
                "WHERE user = 'root' AND id <> CONNECTION_ID()"
            )
            idle = {row[0] for row in await cur.fetchall()}
            assert idle
            for thread in idle:
                await cur.execute(f"KILL CONNECTION {int(thread)}")
            await memory.store_message(make_message("second", timestamp=at(1)), uid, conv)
            got = await memory.retrieve_messages(conv)
            assert [m.content for m in got] == ["second", "first"]

            # A connection killed in the middle of a statement: lost (2013), retried.
            probe = asyncio.create_task(
                memory._run("probe", lambda: memory._perform("read", _sleep))
            )
            for _ in range(50):
                await asyncio.sleep(0.05)
                await cur.execute(
                    "SELECT id FROM information_schema.processlist WHERE info = 'SELECT SLEEP(1.5)'"
                )
                busy = await cur.fetchall()
                if busy:
                    await cur.execute(f"KILL CONNECTION {int(busy[0][0])}")
                    break
            assert busy
            assert await probe == [(0,)]
    finally:
        admin.close()
    assert memory.transient[2013] + memory.transient[2006] >= 1
    await memory.shutdown()


# ==================================================================== locks and limits


@pytest_asyncio.fixture
async def impatient_server() -> AsyncIterator[MariaDBServer]:
    srv = MariaDBServer(["--innodb-lock-wait-timeout=1", "--max-connections=6"])
    srv.start()
    srv.sql("CREATE USER 'app'@'%' IDENTIFIED BY 'app'; GRANT ALL ON test.* TO 'app'@'%'")
    try:
        yield srv
    finally:
        srv.destroy()


async def test_lock_wait_timeout_is_retried(impatient_server: MariaDBServer) -> None:
    srv = impatient_server
    memory = _Counting(srv.url, retry=RetryPolicy(attempts=8, deadline=30), operation_timeout=20)
    uid, conv = new_user_id(), new_conversation_id()
    await memory.store_message(make_message("claims the conversation"), uid, conv)
    holder = await _raw(srv)
    try:
        async with holder.cursor() as cur:
            await cur.execute("START TRANSACTION")
            await cur.execute(
                "SELECT * FROM bruno_conversations WHERE conversation_id = %s FOR UPDATE", (conv,)
            )

            async def release_later() -> None:
                await asyncio.sleep(2.5)
                await cur.execute("ROLLBACK")

            releaser = asyncio.create_task(release_later())
            started = time.monotonic()
            await memory.store_message(make_message("waits for the lock"), uid, conv)
            assert time.monotonic() - started > 1.0
            await releaser
    finally:
        holder.close()
    assert memory.transient[1205] >= 1
    assert len(await memory.retrieve_messages(conv)) == 2
    await memory.shutdown()


async def test_too_many_connections_is_retried(impatient_server: MariaDBServer) -> None:
    srv = impatient_server
    memory = _Counting(
        f"mysql://app:app@127.0.0.1:{srv.port}/test",
        pool_size=6,
        pool_min_size=1,
        # Without a model: claiming the vector space at initialize would open the write
        # connection the store below must ask for.
        embedding_model=None,
        retry=RetryPolicy(attempts=30, initial_backoff=0.05, max_backoff=0.2, deadline=20),
    )
    await memory.initialize()
    hogs: list[Any] = []
    while True:  # take every connection slot that is left
        try:
            hogs.append(await _raw(srv, "app", "app"))
        except asyncmy.errors.OperationalError as exc:
            assert exc.args[0] == 1040
            break

    async def free_one_later() -> None:
        await asyncio.sleep(1.0)
        hogs.pop().close()

    freer = asyncio.create_task(free_one_later())
    uid, conv = new_user_id(), new_conversation_id()
    # A write needs a connection the pool has not opened yet.
    await memory.store_message(make_message("needs a new connection"), uid, conv)
    await freer
    for hog in hogs:
        hog.close()
    assert memory.transient[1040] >= 1
    assert len(await memory.retrieve_messages(conv)) == 1
    await memory.shutdown()


async def test_deadlock_victim_is_retried(server: MariaDBServer) -> None:
    memory = _Counting(server.url, retry=RetryPolicy(attempts=8, deadline=30), operation_timeout=30)
    uid, conv = new_user_id(), new_conversation_id()
    await memory.store_message(make_message("claims the conversation", timestamp=at(0)), uid, conv)
    contested = make_message("both want this id", timestamp=at(1))
    rival = await _raw(server)
    try:
        async with rival.cursor() as cur:
            await cur.execute("CREATE TABLE ballast (n INT PRIMARY KEY) ENGINE=InnoDB")
            await cur.execute("START TRANSACTION")
            # Heavier than the memory's transaction, so InnoDB picks the memory as victim.
            await cur.execute(
                "INSERT INTO ballast VALUES " + ",".join(f"({n})" for n in range(200))
            )
            await cur.execute(
                "INSERT INTO bruno_messages (id, conversation_id, user_id, role, message_type, "
                "ts_us, ts_text, content, metadata, search_terms) "
                "VALUES (%s, %s, %s, 'user', 'text', 0, '', 'rival', '{}', '')",
                (str(contested.id), conv, uid),
            )
            # The memory claims the conversation (shared lock), then waits for the rival's id.
            store = asyncio.create_task(memory.store_message(contested, uid, conv))
            await asyncio.sleep(0.5)
            # The rival now wants the conversation exclusively: a cycle, and a deadlock.
            await cur.execute(
                "SELECT * FROM bruno_conversations WHERE conversation_id = %s FOR UPDATE", (conv,)
            )
            await asyncio.sleep(0.3)
            await cur.execute("ROLLBACK")
            await store
    finally:
        rival.close()
    assert memory.transient[1213] >= 1
    got = await memory.retrieve_messages(conv)
    assert [m.content for m in got] == ["both want this id", "claims the conversation"]
    await memory.shutdown()


def _sleep() -> Plan[list[Any]]:
    return (yield Fetch("SELECT SLEEP(1.5)"))
