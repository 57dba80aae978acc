"""Memory URLs: parsing, typed options, and passwords that never show."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from _secrets import NASTY, PLAIN, shows_nothing_of
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
        ("postgresql://u@host/db", "postgresql://***@host/db"),
        ("redis://secret@host", "redis://***@host"),
        ("redis://:secret@host", "redis://:***@host"),
        ("redis://:@host", "redis://:***@host"),
        ("redis://u:p/ss@host:6379/0", "redis://***@host:6379/0"),
        ("redis://u:p?ss@host:6379/0", "redis://***@host:6379/0"),
        ("redis://u:p#ss@host:6379/0", "redis://***@host:6379/0"),
        ("redis://u:p@ss@host:6379/0", "redis://***@host:6379/0"),
        ("postgresql://u:pw@host/db?application_name=a@b", "postgresql://***@b"),
        ("sqlite:///dir/a@b.db", "sqlite:///dir/a@b.db"),
        ("sqlite:///dir/a@b.db?x=c@d", "sqlite://***@d"),
        ("user:secret@host", "***@host"),
        ("user%3Asecret%40host", "***@host"),
        ("memory://", "memory://"),
        ("sqlite:///memory.db", "sqlite:///memory.db"),
        ("redis://user%40corp:pw@h/0", "redis://user%40corp:***@h/0"),
    ],
)
def test_redact_url(raw: str, expected: str) -> None:
    assert redact_url(raw) == expected


def test_redact_unparsable_url_reveals_nothing() -> None:
    assert "secret" not in redact_url("http://u:secret@[bad")
    assert redact_url(None) == "<not a URL>"  # type: ignore[arg-type]


@pytest.mark.parametrize("password", NASTY)
@pytest.mark.parametrize(
    "template",
    [
        "postgresql://u:{}@127.0.0.1:5432/test",
        "redis://:{}@127.0.0.1:6379/0",
        "mysql://root:{}@127.0.0.1/test?table_prefix=x",
        "hybrid://?cache=redis://:{}@h/0&persistent=sqlite:///x.db",
        "chroma+http://:{}@127.0.0.1:8000",
        "x://{}@h",
        "x://u:{}@h",
    ],
)
def test_an_unencoded_password_is_refused_without_showing_it(template: str, password: str) -> None:
    raw = template.format(password)
    with pytest.raises(InvalidArgumentError) as info:
        MemoryURL.parse(raw)
    shows_nothing_of(password, str(info.value), repr(info.value), redact_url(raw))
    assert "percent-encode" in str(info.value)


@pytest.mark.parametrize("password", PLAIN)
def test_a_plain_password_needs_no_encoding(password: str) -> None:
    url = MemoryURL.parse(f"redis://u:{password}@127.0.0.1:6379/0")
    assert (url.username, url.password, url.host) == ("u", password, "127.0.0.1")
    shows_nothing_of(password, str(url), repr(url))


def test_an_unreadable_host_or_port_is_not_echoed() -> None:
    for raw in ("x://u:Pw1x/Qz2y", "x://[Pw1xQz2y", "x://h:99999999/Pw1xQz2y"):
        with pytest.raises(InvalidArgumentError) as info:
            MemoryURL.parse(raw)
        shows_nothing_of("Pw1x/Qz2y", str(info.value))
        assert "host or port" in str(info.value)


@pytest.mark.parametrize("password", NASTY + PLAIN)
def test_a_percent_encoded_password_is_decoded_and_never_shown(password: str) -> None:
    url = MemoryURL.parse(f"redis://us%40er:{quote(password, safe='')}@127.0.0.1:6379/0")
    assert (url.username, url.password, url.host, url.port) == (
        "us@er",
        password,
        "127.0.0.1",
        6379,
    )
    assert str(url) == "redis://us%40er:***@127.0.0.1:6379/0"
    shows_nothing_of(password, str(url), repr(url))
    driver_text = f"failed at {url.raw}: auth {password} / {quote(password, safe='')}"
    assert url.redact(driver_text) == f"failed at {url}: auth *** / ***"


@pytest.mark.parametrize(
    "raw",
    [
        "redis://h:6379/0#frag",  # no fragment in a memory URL
        "redis://u:p@h/0?x=a@b",  # a second '@', in the query
        "redis://u@x:p@h/0",  # '@' in the user name
        "redis://h/0?tab=\t",
        "redis://h/\n0",
    ],
)
def test_ambiguous_urls_are_refused(raw: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        MemoryURL.parse(raw)
    assert info.value.argument == "url"


def test_user_part_escapes_must_be_utf8() -> None:
    with pytest.raises(InvalidArgumentError) as info:
        MemoryURL.parse("redis://:%ffSecr3t@h/0")
    assert "Secr3t" not in str(info.value)


def test_at_signs_in_the_path_of_a_url_without_host() -> None:
    assert MemoryURL.parse("sqlite:///dir/a@b.db").path == "/dir/a@b.db"
    assert MemoryURL.parse("sqlite:///dir/a%40b.db").path == "/dir/a@b.db"


def test_nested_url_parse_errors_are_redacted() -> None:
    for password in NASTY + PLAIN:
        inner = f"redis://:{password}@127.0.0.1:6379/0"
        outer = f"hybrid://?cache={quote(inner, safe='')}&persistent=sqlite%3A%2F%2F%2Fx.db"
        shows_nothing_of(password, redact_url(outer), str(MemoryURL.parse(outer)))
        if password in NASTY:
            with pytest.raises(InvalidArgumentError) as info:
                MemoryURL.parse(MemoryURL.parse(outer).query["cache"])
            shows_nothing_of(password, str(info.value))


def test_doubly_encoded_nested_urls_are_redacted() -> None:
    inner = quote(quote("redis://:Pw1xQz2y@h/0", safe=""), safe="")
    assert "Pw1xQz2y" not in redact_url(f"hybrid://?cache={inner}")


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


def test_apply_options_types_the_query_and_lets_keywords_win() -> None:
    url = MemoryURL.parse("x://h/?n=5&flag=no&name=abc&driver_opt=1")
    merged = url.apply_options(
        {"name": "kw", "extra": 1},
        {"n": int, "flag": bool, "name": str, "m": int},
        also={"driver_opt"},
    )
    assert merged == {"n": 5, "flag": False, "name": "kw", "extra": 1}
    with pytest.raises(InvalidArgumentError) as info:
        url.apply_options({}, {"n": int})
    assert "driver_opt, flag, name" in str(info.value)
    with pytest.raises(InvalidArgumentError) as info:
        MemoryURL.parse("x://h/?n=five").apply_options({"n": 1}, {"n": int})
    assert info.value.argument == "url option n"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("x:///rel/dir", "rel/dir"), ("x:////abs/dir", "/abs/dir"), ("x:///a@b", "a@b")],
)
def test_local_path(raw: str, expected: str) -> None:
    assert MemoryURL.parse(raw).local_path(remote="remote", missing="missing") == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("x://host/dir", "remote"),
        ("x://:pw@/dir", "remote"),
        ("x://:@/dir", "remote"),
        ("x://:5/dir", "remote"),
        ("x://", "missing"),
        ("x:///", "missing"),
    ],
)
def test_local_path_refuses_a_server_part_or_no_path(raw: str, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        MemoryURL.parse(raw).local_path(remote="remote", missing="missing")


def test_passwords_of_urls_nested_in_query_values_are_redacted() -> None:
    cache = quote("redis://:cachepw@127.0.0.1:6379/0", safe="")
    persistent = quote("postgresql://u:dbpw@127.0.0.1/test", safe="")
    url = MemoryURL.parse(f"hybrid://?cache={cache}&persistent={persistent}")
    for text in (str(url), repr(url), redact_url(url.raw)):
        assert "cachepw" not in text and "dbpw" not in text
    assert url.query["cache"] == "redis://:cachepw@127.0.0.1:6379/0"
