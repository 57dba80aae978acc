"""One exception hierarchy, whose leaves are also the builtins callers already catch."""

from __future__ import annotations

import pickle

import pytest
from bruno_core.utils.exceptions import BrunoError
from bruno_core.utils.exceptions import MemoryError as BrunoMemoryError

from bruno_memstore import errors
from bruno_memstore.errors import (
    BackendError,
    BackendTimeoutError,
    BackendUnavailableError,
    CapabilityError,
    ConflictError,
    InvalidArgumentError,
    MemstoreError,
    MissingDependencyError,
    NotFoundError,
    OwnershipError,
    SchemaError,
    UnknownSchemeError,
)

ALL = [getattr(errors, name) for name in errors.__all__]


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_every_error_is_a_bruno_core_memory_error(cls: type[Exception]) -> None:
    assert issubclass(cls, MemstoreError)
    assert issubclass(cls, BrunoMemoryError)
    assert issubclass(cls, BrunoError)


@pytest.mark.parametrize(
    ("cls", "builtin"),
    [
        (InvalidArgumentError, ValueError),
        (UnknownSchemeError, ValueError),
        (UnknownSchemeError, InvalidArgumentError),
        (ConflictError, ValueError),
        (OwnershipError, PermissionError),
        (NotFoundError, LookupError),
        (BackendUnavailableError, ConnectionError),
        (BackendUnavailableError, BackendError),
        (BackendTimeoutError, TimeoutError),
        (BackendTimeoutError, BackendError),
        (MissingDependencyError, ImportError),
    ],
)
def test_leaves_derive_from_the_expected_builtin(
    cls: type[Exception], builtin: type[Exception]
) -> None:
    assert issubclass(cls, builtin)


def test_not_everything_is_a_value_error() -> None:
    for cls in (OwnershipError, NotFoundError, BackendError, CapabilityError, SchemaError):
        assert not issubclass(cls, ValueError), cls


def test_message_names_backend_and_operation() -> None:
    err = BackendError("disk full", backend="sqlite", operation="store_message")
    assert str(err) == "[sqlite/store_message] disk full"
    assert err.backend == "sqlite"
    assert err.operation == "store_message"
    assert "disk full" in repr(err)
    assert str(MemstoreError("plain")) == "plain"
    assert str(MemstoreError("half", operation="search")) == "[search] half"


def test_cause_is_kept() -> None:
    original = OSError("connection reset")
    err = BackendUnavailableError("lost", backend="postgres", operation="search", cause=original)
    assert err.cause is original


def test_invalid_argument_names_the_argument() -> None:
    err = InvalidArgumentError("limit", "must be at least 1, got 0")
    assert err.argument == "limit"
    assert str(err) == "invalid argument 'limit': must be at least 1, got 0"


def test_missing_dependency_gives_the_pip_command() -> None:
    err = MissingDependencyError("postgres", "asyncpg")
    assert "pip install 'bruno-memstore[postgres]'" in str(err)
    assert "'asyncpg'" in str(err)
    assert (err.extra, err.package) == ("postgres", "asyncpg")


@pytest.mark.parametrize(
    "err",
    [
        BackendError("boom", backend="redis", operation="get_context"),
        OwnershipError("not yours", backend="memory", operation="store_message"),
        ConflictError("changed"),
        MemstoreError("root"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_errors_pickle(err: MemstoreError) -> None:
    # Errors cross process boundaries (multiprocessing, task queues) intact.
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is type(err)
    assert str(back) == str(err)
    assert (back.backend, back.operation) == (err.backend, err.operation)


def test_invalid_argument_pickles_with_its_argument() -> None:
    back = pickle.loads(pickle.dumps(InvalidArgumentError("user_id", "must not be empty")))
    assert isinstance(back, InvalidArgumentError)
    assert "user_id" in str(back)
    assert back.argument == "user_id"
