"""Memory URLs: parsing, typed options, and passwords that never show."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from bruno_memstore.errors import InvalidArgumentError
from bruno_memstore.url import MemoryURL, redact_url

SECRET = "s3cr%40t-pw"  # percent-encoded "s3cr@t-pw"


def test_parse_every_part() -> None:
    url = MemoryURL.parse(f"PostgreSQL+asyncpg://bob:{SECRET}@db.example:5433/app?pool=5&ssl=")
    assert url.scheme == "postgresql"
    assert url.driver == "asyncpg"
    assert url.username == "bob"
    assert url.password == "s3cr@t-pw"
    assert (url.host, url.port, url.path) == ("db.example", 5433, "/app")
    assert url.query == {"pool": "5", "ssl": ""}


def test_parse_minimal_urls() -> None:
    mem = MemoryURL.parse("memory://")
    assert (mem.scheme, mem.driver, mem.host, mem.port, mem.path) == (
        "memory",
        None,
        None,
        None,
        "",
    )
    lite = MemoryURL.parse("sqlite:///var/lib/memory%20store.db")
    assert lite.path == "/var/lib/memory store.db"
    assert lite.password is None


@pytest.mark.parametrize("bad", ["", "memory", "/just/a/path", None, 42])
def test_malformed_url(bad: object) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        MemoryURL.parse(bad)  # type: ignore[arg-type]
    assert info.value.argument == "url"


def test_bad_port_error_hides_the_password() -> None:
    with pytest.raises(InvalidArgumentError) as info:
        MemoryURL.parse("redis://:hunter2@localhost:notaport/0")
    assert "hunter2" not in str(info.value)
    assert "port" in str(info.value)


def test_str_and_repr_never_show_the_password() -> None:
    url = MemoryURL.parse(f"mysql://root:{SECRET}@127.0.0.1:3306/test?charset=utf8mb4")
    for text in (str(url), repr(url), f"{url}", f"{url!r}"):
        assert "s3cr" not in text
    assert str(url) == "mysql://root:***@127.0.0.1:3306/test?charset=utf8mb4"


def test_malformed_url_error_hides_the_password() -> None:
    with pytest.raises(InvalidArgumentError) as info:
        MemoryURL.parse("user:topsecret@host")
    assert "topsecret" not in str(info.value)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("redis://:pw@localhost:6379/0", "redis://:***@localhost:6379/0"),
        ("postgresql://u:p%2Fw@[::1]:5432/db", "postgresql://u:***@[::1]:5432/db"),
        ("postgresql://u:pw@host/db", "postgresql://u:***@host/db"),
        ("postgresql://u@host/db", "postgresql://u@host/db"),
        ("sqlite:///memory.db", "sqlite:///memory.db"),
        ("redis://user%40corp:pw@h/0", "redis://user%40corp:***@h/0"),
    ],
)
def test_redact_url(raw: str, expected: str) -> None:
    assert redact_url(raw) == expected


def test_redact_unparsable_url_reveals_nothing() -> None:
    assert "secret" not in redact_url("http://u:secret@[bad")


def test_typed_options() -> None:
    url = MemoryURL.parse("x://h/?n=5&ratio=0.5&flag=yes&off=0&name=abc")
    assert url.option("n", int) == 5
    assert url.option("ratio", float) == 0.5
    assert url.option("flag", bool) is True
    assert url.option("off", bool) is False
    assert url.option("name", str) == "abc"
    assert url.option("missing", int, 7) == 7


@pytest.mark.parametrize(("name", "kind"), [("n", int), ("flag", bool), ("n", float)])
def test_unparsable_option_names_it(name: str, kind: type) -> None:
    url = MemoryURL.parse("x://h/?n=five&flag=maybe")
    with pytest.raises(InvalidArgumentError) as info:
        url.option(name, kind)
    assert name in info.value.argument


def test_unknown_options_are_refused_by_name() -> None:
    url = MemoryURL.parse("x://h/?pool=1&typo=2&other=3")
    url.check_options({"pool", "typo", "other"})
    with pytest.raises(InvalidArgumentError) as info:
        url.check_options({"pool"})
    assert "other, typo" in str(info.value)
    assert "known: pool" in str(info.value)


def test_passwords_of_urls_nested_in_query_values_are_redacted() -> None:
    cache = quote("redis://:cachepw@127.0.0.1:6379/0", safe="")
    persistent = quote("postgresql://u:dbpw@127.0.0.1/test", safe="")
    url = MemoryURL.parse(f"hybrid://?cache={cache}&persistent={persistent}")
    for text in (str(url), repr(url), redact_url(url.raw)):
        assert "cachepw" not in text and "dbpw" not in text
    assert url.query["cache"] == "redis://:cachepw@127.0.0.1:6379/0"
