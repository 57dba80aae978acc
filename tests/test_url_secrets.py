"""No password from a memory URL shows anywhere, whatever it holds and whatever the scheme.

Every scheme the registry knows is tried with passwords full of URL delimiters: unencoded
(the URL must be refused, saying to percent-encode, without quoting the password) and
percent-encoded (the URL works: the driver gets the decoded password, and reprs,
``describe()``, connection errors, log records, Prometheus labels and the command line show
none of it). Real logins with such passwords run against MariaDB, Redis and PostgreSQL.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote
from uuid import uuid4

import asyncmy
import asyncpg
import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY, generate_latest
from typer.testing import CliRunner

from _secrets import NASTY, PLAIN, shows_nothing_of
from bruno_memstore import open_memory
from bruno_memstore.cli import load_app
from bruno_memstore.errors import (
    BackendError,
    BackendUnavailableError,
    InvalidArgumentError,
    MemstoreError,
)
from bruno_memstore.registry import known_schemes
from bruno_memstore.testing.builders import make_message
from bruno_memstore.url import MemoryURL, redact_url

CLOSED = "127.0.0.1:1"  # nothing listens there: connecting is refused at once


def _hybrid(password: str) -> str:
    cache = quote(f"redis://:{password}@{CLOSED}/0", safe="")
    persistent = quote(f"postgresql://u:{password}@{CLOSED}/test?connect_timeout=5", safe="")
    return f"hybrid://?cache={cache}&persistent={persistent}"


# Scheme -> a URL with the password (as given) in it. The hybrid's inner URLs are encoded as
# the hybrid asks, but the password inside them is put as given.
URLS: dict[str, Callable[[str], str]] = {
    "postgresql": lambda pw: f"postgresql://u:{pw}@{CLOSED}/test?connect_timeout=5",
    "postgres": lambda pw: f"postgres://u:{pw}@{CLOSED}/test?connect_timeout=5",
    "mysql": lambda pw: f"mysql://u:{pw}@{CLOSED}/test?connect_timeout=5",
    "mariadb": lambda pw: f"mariadb://u:{pw}@{CLOSED}/test?connect_timeout=5",
    "redis": lambda pw: f"redis://u:{pw}@{CLOSED}/0",
    "rediss": lambda pw: f"rediss://:{pw}@{CLOSED}/0",
    "redis+cluster": lambda pw: f"redis+cluster://u:{pw}@{CLOSED}",
    "memcached": lambda pw: f"memcached://u:{pw}@{CLOSED}",
    "hybrid": _hybrid,
    "dynamodb": lambda pw: f"dynamodb://u:{pw}@bruno_memory?endpoint=http://{CLOSED}",
    "chroma": lambda pw: f"chroma://:{pw}@/store",
    "chroma+http": lambda pw: f"chroma+http://:{pw}@{CLOSED}",
    "qdrant": lambda pw: f"qdrant://:{pw}@/store",
    "qdrant+http": lambda pw: f"qdrant+http://:{pw}@{CLOSED}",
    "weaviate": lambda pw: f"weaviate://:{pw}@{CLOSED}?grpc_port=2",
    "weaviate+https": lambda pw: f"weaviate+https://:{pw}@{CLOSED}?grpc_port=2",
    "mongodb": lambda pw: f"mongodb://u:{pw}@{CLOSED}/test?connect_timeout=1",
    "pinecone": lambda pw: f"pinecone://:{pw}@bruno-memory?host=http://{CLOSED}&timeout=2",
    "sqlite": lambda pw: f"sqlite://:{pw}@/store.db",
    "memory": lambda pw: f"memory://u:{pw}@",
}
# Schemes whose URL takes no credentials: a user part is refused, however it is written.
NO_CREDENTIALS = {"memcached", "chroma", "qdrant", "sqlite", "dynamodb"}
# Schemes whose password travels in an HTTP header: it must be printable ASCII.
HTTP = {"chroma+http", "qdrant+http", "weaviate", "weaviate+https", "pinecone"}
# Passwords tried on a real (refused) connection, for every scheme: delimiters, unicode.
CONNECT_WITH = ["Pw1x/Qz2y@Rk3w#", "Pw1xä/Qz2y\uff20Rk3w", "Pw1x&Qz2y=Rk3w"]


def _encoded(password: str) -> str:
    return quote(password, safe="")


def test_every_registered_scheme_is_covered() -> None:
    covered = {name.partition("+")[0] for name in URLS}
    assert set(known_schemes()) <= covered


def _error_texts(exc: BaseException) -> list[str]:
    """What a caller may print of an error: str, repr, and the whole chained traceback."""
    return [str(exc), repr(exc), "".join(traceback.format_exception(exc))]


@pytest.mark.parametrize("password", NASTY)
@pytest.mark.parametrize("scheme", list(URLS))
def test_an_unencoded_nasty_password_is_refused_unseen(scheme: str, password: str) -> None:
    url = URLS[scheme](password)
    with pytest.raises(InvalidArgumentError) as info:
        open_memory(url)
    shows_nothing_of(password, *_error_texts(info.value), redact_url(url))
    assert "percent-encode" in str(info.value)


@pytest.mark.parametrize("password", NASTY + PLAIN)
@pytest.mark.parametrize("scheme", list(URLS))
async def test_an_encoded_password_never_shows(
    scheme: str, password: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url = URLS[scheme](_encoded(password))
    texts = [redact_url(url), str(MemoryURL.parse(url)), repr(MemoryURL.parse(url))]
    if scheme in NO_CREDENTIALS or (scheme in HTTP and not password.isascii()):
        with pytest.raises(InvalidArgumentError) as info:
            open_memory(url)
        texts += _error_texts(info.value)
    else:
        memory = open_memory(url)
        texts += [repr(memory), memory.describe(), str(memory)]
        if scheme != "memory" and password in CONNECT_WITH:
            try:
                with pytest.raises(BackendUnavailableError) as info:
                    await memory.get_statistics("someone")
                texts += _error_texts(info.value)
            finally:
                await memory.shutdown()
    texts += [caplog.text, *(r.getMessage() for r in caplog.records)]
    texts.append(_metric_text())
    shows_nothing_of(password, *texts)


def _metric_text() -> str:
    """What the library's metrics say in words: their help texts and labels. Sample values
    are numbers (no password fits there), and the process's own metrics are not ours; both
    may hold a password's digits by chance."""
    ours = [
        line.partition(" ")[0] if not line.startswith("#") else line
        for line in generate_latest(REGISTRY).decode().splitlines()
        if line.startswith(("bruno_memstore", "# HELP bruno_memstore"))
    ]
    return "\n".join(ours)


@pytest.mark.parametrize("password", NASTY)
def test_constructors_taking_a_url_apply_the_same_rule(password: str) -> None:
    from bruno_memstore.backends.memcached import MemcachedMemory
    from bruno_memstore.backends.mongo import MongoMemory
    from bruno_memstore.backends.mysql import MySQLMemory
    from bruno_memstore.backends.postgres import PostgresMemory
    from bruno_memstore.backends.qdrant import QdrantMemory
    from bruno_memstore.backends.redis import RedisMemory

    for build in (
        lambda: PostgresMemory(dsn=f"postgresql://u:{password}@{CLOSED}/test"),
        lambda: MySQLMemory(f"mysql://u:{password}@{CLOSED}/test"),
        lambda: RedisMemory(redis_url=f"redis://u:{password}@{CLOSED}/0"),
        lambda: MemcachedMemory(f"memcached://u:{password}@{CLOSED}"),
        lambda: MongoMemory(f"mongodb://u:{password}@{CLOSED}/test"),
        lambda: QdrantMemory(url=f"http://:{password}@{CLOSED}", embedding_model=None),
    ):
        with pytest.raises(InvalidArgumentError) as info:
            build()
        shows_nothing_of(password, *_error_texts(info.value))


def test_a_token_sent_in_a_header_must_be_printable_ascii() -> None:
    from bruno_memstore.backends.chroma import ChromaMemory
    from bruno_memstore.backends.pinecone import PineconeMemory

    for token in ("Pw1xäQz2y", "Pw1x\nQz2y"):
        with pytest.raises(InvalidArgumentError) as info:
            ChromaMemory(host="127.0.0.1", port=1, token=token, embedding_model=None)
        assert info.value.argument == "token"
        shows_nothing_of(token, *_error_texts(info.value))
        with pytest.raises(InvalidArgumentError) as info:
            PineconeMemory(None, host=f"http://{CLOSED}", api_key=token)
        assert info.value.argument == "api_key"
        shows_nothing_of(token, *_error_texts(info.value))


def test_inner_url_errors_of_a_hybrid_are_redacted() -> None:
    sqlite = quote("sqlite:///x.db", safe="")
    for password in NASTY:
        for inner in (f"redis://:{password}@{CLOSED}/0", f"postgresql://u:{password}@h/db"):
            for url in (
                f"hybrid://?cache={quote(inner, safe='')}&persistent={sqlite}",
                f"hybrid://?cache=memory%3A%2F%2F&persistent={quote(inner, safe='')}",
                f"hybrid://?cache={inner}&persistent={sqlite}",  # inner URL not encoded
            ):
                with pytest.raises(InvalidArgumentError) as info:
                    open_memory(url)
                shows_nothing_of(password, *_error_texts(info.value), redact_url(url))


# Passwords made of letter groups that appear nowhere else, joined by anything a URL may
# hold; the property: none of the groups ever shows, whatever the URL looks like.
_GROUP = st.text(alphabet="JKQVWXZ", min_size=4, max_size=6)
_GLUE = st.text(alphabet="/?#@:%&=+ $!;,[]\\ä\uff20\uff0f\n", min_size=0, max_size=3)


@st.composite
def _passwords(draw: st.DrawFn) -> str:
    groups = draw(st.lists(_GROUP, min_size=1, max_size=3))
    return "".join(draw(_GLUE) + group for group in groups) + draw(_GLUE)


@settings(max_examples=300, deadline=None)
@given(password=_passwords(), scheme=st.sampled_from(sorted(URLS)), encode=st.booleans())
def test_property_no_piece_of_a_password_ever_shows(
    password: str, scheme: str, encode: bool
) -> None:
    url = URLS[scheme](_encoded(password) if encode else password)
    texts = [redact_url(url)]
    try:
        parsed = MemoryURL.parse(url)
    except InvalidArgumentError as exc:
        assert not encode or scheme in NO_CREDENTIALS, str(exc)
        texts += _error_texts(exc)
    else:
        texts += [str(parsed), repr(parsed)]
        if encode and scheme not in ("hybrid", "chroma", "qdrant", "sqlite", "memory"):
            assert parsed.password == password
        try:
            memory = open_memory(url)
        except MemstoreError as exc:
            texts += _error_texts(exc)
        else:
            texts += [repr(memory), memory.describe()]
    shows_nothing_of(password, *texts)


# ---------------------------------------------------------------- the command line


@pytest.fixture
def cli() -> Callable[..., tuple[int, str]]:
    runner = CliRunner()
    app = load_app()

    def run(*args: str) -> tuple[int, str]:
        result = runner.invoke(app, list(args), env={"BRUNO_MEMSTORE_URL": None})
        return result.exit_code, result.output

    return run


@pytest.mark.parametrize(
    "scheme", ["postgresql", "mysql", "redis", "hybrid", "qdrant+http", "weaviate", "pinecone"]
)
def test_the_command_line_never_prints_a_password(
    cli: Callable[..., tuple[int, str]], scheme: str
) -> None:
    for password in ("Pw1x/Qz2y@Rk3w#", "Pw1x?Qz2y", "Pw1x\uff20Qz2y"):
        for written in (password, _encoded(password)):
            url = URLS[scheme](written)
            for args in (("stats", "--user", "x", "-u", url), ("copy", url, "memory://")):
                status, output = cli(*args)
                assert status == 1, output
                assert output.startswith("error: "), output
                shows_nothing_of(password, output)


def test_a_demo_file_name_with_url_delimiters(
    cli: Callable[..., tuple[int, str]], tmp_path: Path
) -> None:
    path = tmp_path / "a#b?c%zz@d.db"
    status, output = cli("demo", "--db", str(path))
    assert status == 0, output
    assert path.exists()


# ---------------------------------------------------------------- real logins

# Every character that needs encoding in a user part, plus '%' with and without hex after it.
LOGIN_PASSWORD = "p/ss#w?rd@1:%zz%41&x=ä"


@pytest.fixture
async def mariadb_user() -> Iterator[str]:
    name = f"bruno_url_{uuid4().hex[:8]}"
    root = await asyncmy.connect(
        host="127.0.0.1", port=3306, user="root", password="", charset="utf8mb4"
    )
    try:
        async with root.cursor() as cur:
            await cur.execute(
                f"CREATE USER '{name}'@'127.0.0.1' IDENTIFIED BY %s", (LOGIN_PASSWORD,)
            )
            await cur.execute(f"GRANT ALL ON test.* TO '{name}'@'127.0.0.1'")
        yield name
    finally:
        async with root.cursor() as cur:
            await cur.execute(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = 'test' AND table_name LIKE %s",
                (f"{name}\\_%",),
            )
            for (table,) in await cur.fetchall():
                await cur.execute(f"DROP TABLE test.`{table}`")
            await cur.execute(f"DROP USER IF EXISTS '{name}'@'127.0.0.1'")
        root.close()


async def _logs_in_and_hides_the_password(base: str, refusal: str = "") -> None:
    """``base`` (a URL with ``{}`` for the password) works with the encoded password, and a
    wrong one fails with ``refusal`` in the error and nothing of the password anywhere."""
    async with open_memory(base.format(_encoded(LOGIN_PASSWORD))) as memory:
        await memory.store_message(make_message("hello"), "alice", "c1")
        assert (await memory.get_statistics("alice"))["total_messages"] == 1
        shows_nothing_of(LOGIN_PASSWORD, repr(memory), memory.describe())
    wrong = open_memory(base.format(_encoded(LOGIN_PASSWORD + "x")))
    try:
        with pytest.raises(BackendError) as info:
            await wrong.get_statistics("alice")
        assert refusal in str(info.value)
        shows_nothing_of(LOGIN_PASSWORD, *_error_texts(info.value))
    finally:
        await wrong.shutdown()


async def test_mariadb_login_with_an_encoded_password(mariadb_user: str) -> None:
    await _logs_in_and_hides_the_password(
        f"mysql://{mariadb_user}:{{}}@127.0.0.1:3306/test?table_prefix={mariadb_user}_",
        "Access denied",
    )


@pytest.fixture
def redis_user() -> Iterator[str]:
    name = f"bruno_url_{uuid4().hex[:8]}"
    admin = redis.Redis(host="127.0.0.1", port=6379)
    admin.acl_setuser(
        name,
        enabled=True,
        passwords=[f"+{LOGIN_PASSWORD}"],
        keys=[f"{name}*", f"{{{name}*"],
        commands=["+@all"],
    )
    try:
        yield name
    finally:
        for pattern in (f"{name}*", f"{{{name}*"):
            keys = list(admin.scan_iter(match=pattern, count=1000))
            if keys:
                admin.delete(*keys)
        admin.acl_deluser(name)
        admin.close()


async def test_redis_login_with_an_encoded_password(redis_user: str) -> None:
    await _logs_in_and_hides_the_password(
        f"redis://{redis_user}:{{}}@127.0.0.1:6379/0?prefix={redis_user}"
    )


async def test_postgres_login_with_an_encoded_user_and_password() -> None:
    # The server trusts 127.0.0.1, so the password is not checked: what the driver was given
    # is, and the role name (with '@' and '/') must arrive decoded.
    role = f"bruno url@{uuid4().hex[:8]}/x"
    schema = f"url_{uuid4().hex[:12]}"
    admin = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/test")
    await admin.execute(f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{LOGIN_PASSWORD}'")
    await admin.execute(f'GRANT CREATE ON DATABASE test TO "{role}"')
    url = (
        f"postgresql://{_encoded(role)}:{_encoded(LOGIN_PASSWORD)}@127.0.0.1:5432/test"
        f"?schema={schema}"
    )
    try:
        async with open_memory(url, embedding_model=None) as memory:
            await memory.store_message(make_message("hello"), "alice", "c1")
            assert (await memory.get_statistics("alice"))["total_messages"] == 1
            async with memory._pool.acquire() as conn:
                assert await conn.fetchval("SELECT current_user") == role
                assert conn._params.password == LOGIN_PASSWORD
            shows_nothing_of(LOGIN_PASSWORD, repr(memory), memory.describe())
    finally:
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.execute(f'REVOKE CREATE ON DATABASE test FROM "{role}"')
        await admin.execute(f'DROP OWNED BY "{role}"')
        await admin.execute(f'DROP ROLE "{role}"')
        await admin.close()
