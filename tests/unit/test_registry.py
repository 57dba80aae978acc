"""Scheme registry: lazy imports, did-you-mean, and the pip command for a missing extra."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from bruno_memstore import registry
from bruno_memstore.backends.memory import InMemoryStorage
from bruno_memstore.errors import (
    InvalidArgumentError,
    MissingDependencyError,
    UnknownSchemeError,
)
from bruno_memstore.registry import known_schemes, open_memory, register, resolve
from bruno_memstore.url import MemoryURL


@pytest.fixture(autouse=True)
def _private_registrations(monkeypatch: pytest.MonkeyPatch) -> None:
    # register() mutates module state; keep each test's registrations to itself.
    monkeypatch.setattr(registry, "_registered", {})


class SecretMemory(InMemoryStorage):
    """A backend built from a URL with a password, to check that reprs hide it."""

    @classmethod
    def from_url(cls, url: MemoryURL, **options: Any) -> SecretMemory:
        url.check_options({"window"})
        window = url.option("window", int, 20)
        mem = cls(context_window=window, **options)  # type: ignore[arg-type]
        mem.url = url
        return mem

    def describe(self) -> str:
        return str(self.url)


def test_builtin_schemes_are_known() -> None:
    schemes = known_schemes()
    for scheme in ("memory", "sqlite", "postgresql", "postgres", "mysql", "redis", "memcached"):
        assert scheme in schemes
    assert schemes == sorted(schemes)


def test_resolve_imports_lazily() -> None:
    assert resolve("memory") is InMemoryStorage
    assert resolve("MEMORY") is InMemoryStorage


def test_open_memory_builds_the_backend() -> None:
    mem = open_memory("memory://", context_window=7)
    assert isinstance(mem, InMemoryStorage)
    assert mem.context_window == 7
    assert not mem.connected  # nothing connects until first use


def test_open_memory_refuses_unknown_options() -> None:
    with pytest.raises(InvalidArgumentError) as info:
        open_memory("memory://?colour=blue")
    assert "colour" in str(info.value)


def test_unknown_scheme_lists_known_ones_and_suggests() -> None:
    with pytest.raises(UnknownSchemeError) as info:
        open_memory("postgress://localhost/db")
    text = str(info.value)
    assert "'postgress'" in text
    assert "Did you mean 'postgres'?" in text
    for scheme in ("memory", "sqlite", "redis"):
        assert scheme in text
    assert isinstance(info.value, InvalidArgumentError)
    assert isinstance(info.value, ValueError)


def test_unknown_scheme_without_a_close_match() -> None:
    with pytest.raises(UnknownSchemeError) as info:
        resolve("zzzzqqq")
    assert "Did you mean" not in str(info.value)
    assert "known schemes: " in str(info.value)


def test_unknown_scheme_error_hides_the_password() -> None:
    with pytest.raises(UnknownSchemeError) as info:
        open_memory("nosuchdb://admin:hunter2@db.internal/prod")
    assert "hunter2" not in str(info.value)
    assert "hunter2" not in repr(info.value)


def test_missing_extra_gives_the_pip_command() -> None:
    # The backend module's own import of its client is what fails when an extra is missing.
    register("fancydb", "fancydb_client_not_installed.backend:FancyMemory", extra="fancy")
    assert "fancydb" in known_schemes()
    with pytest.raises(MissingDependencyError) as info:
        open_memory("fancydb://host/db")
    assert "pip install 'bruno-memstore[fancy]'" in str(info.value)
    assert info.value.extra == "fancy"
    assert isinstance(info.value, ImportError)
    assert isinstance(info.value.__cause__, ModuleNotFoundError)


def test_missing_module_without_extra_is_a_plain_import_error() -> None:
    register("brokendb", "brokendb_not_installed.broken:Broken")
    with pytest.raises(ImportError) as info:
        resolve("brokendb")
    assert not isinstance(info.value, MissingDependencyError)


def test_a_missing_backend_module_is_not_a_missing_extra() -> None:
    # The extra is installed but the library's own module is absent: a bug, not a pip hint.
    register("ghostdb", "bruno_memstore.backends.no_such_backend:Ghost", extra="ghost")
    with pytest.raises(ModuleNotFoundError) as info:
        resolve("ghostdb")
    assert not isinstance(info.value, MissingDependencyError)


def test_register_a_class_and_a_module_path() -> None:
    register("Mine", InMemoryStorage)
    assert resolve("mine") is InMemoryStorage
    register("other", "bruno_memstore.backends.memory:InMemoryStorage")
    assert resolve("other") is InMemoryStorage
    assert {"mine", "other"} <= set(known_schemes())


def test_registration_overrides_a_builtin() -> None:
    register("memory", SecretMemory)
    assert isinstance(open_memory("memory://"), SecretMemory)


def test_backend_built_from_url_hides_the_password() -> None:
    register("secret", SecretMemory)
    mem = open_memory("secret://admin:hunter2@db.internal:1234/prod?window=3")
    assert isinstance(mem, SecretMemory)
    assert mem.context_window == 3
    assert "hunter2" not in repr(mem)
    assert "admin:***@db.internal:1234" in repr(mem)


def test_entry_point_schemes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        registry,
        "_entry_point_schemes",
        lambda: {"plugged": "bruno_memstore.backends.memory:InMemoryStorage"},
    )
    assert "plugged" in known_schemes()
    assert resolve("plugged") is InMemoryStorage


def test_importing_the_package_imports_no_backend() -> None:
    code = (
        "import sys, bruno_memstore; "
        "print(any(m.startswith('bruno_memstore.backends.') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
