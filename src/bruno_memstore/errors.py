"""One exception hierarchy for every backend.

Every error derives from :class:`MemstoreError`, which itself derives from bruno-core's
``MemoryError`` so code written against bruno-core keeps catching it. Leaves also derive
from the builtin a caller already expects (``ValueError``, ``PermissionError``,
``LookupError``, ``ConnectionError``, ``TimeoutError``, ``ImportError``).
"""

from __future__ import annotations

from typing import Any

from bruno_core.utils.exceptions import MemoryError as BrunoMemoryError

__all__ = [
    "BackendError",
    "BackendTimeoutError",
    "BackendUnavailableError",
    "CapabilityError",
    "ClosedError",
    "ConflictError",
    "EmbeddingMismatchError",
    "InvalidArgumentError",
    "MemstoreError",
    "MissingDependencyError",
    "NotFoundError",
    "OwnershipError",
    "SchemaError",
    "UnknownSchemeError",
]


class MemstoreError(BrunoMemoryError):
    """Root of every error raised by bruno-memstore.

    Attributes:
        backend: short backend name (``"sqlite"``), when known.
        operation: public operation that failed (``"store_message"``), when known.
        cause: the original driver exception, when there is one.
    """

    def __init__(
        self,
        message: str,
        *,
        backend: str | None = None,
        operation: str | None = None,
        cause: BaseException | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, details=details, cause=cause)  # type: ignore[arg-type]
        self.backend = backend
        self.operation = operation

    def __str__(self) -> str:
        where = "/".join(p for p in (self.backend, self.operation) if p)
        return f"[{where}] {self.message}" if where else self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Subclasses take other constructor arguments: rebuild from the state instead.
        state = {k: v for k, v in self.__dict__.items() if k != "cause"}
        return (_rebuild, (type(self), self.args, state))


def _rebuild(cls: type[MemstoreError], args: tuple[Any, ...], state: dict[str, Any]):
    err = cls.__new__(cls, *args)
    err.args = args
    err.__dict__.update(state)
    err.cause = None
    return err


class InvalidArgumentError(MemstoreError, ValueError):
    """An argument is missing, of the wrong type or out of range; nothing was written."""

    def __init__(self, argument: str, problem: str, **kwargs: Any) -> None:
        super().__init__(f"invalid argument {argument!r}: {problem}", **kwargs)
        self.argument = argument


class UnknownSchemeError(InvalidArgumentError):
    """A memory URL names a scheme no backend is registered for."""


class ConflictError(MemstoreError, ValueError):
    """An id already names a different record (ids are immutable once stored)."""


class OwnershipError(MemstoreError, PermissionError):
    """The conversation, session or memory entry belongs to another user."""


class NotFoundError(MemstoreError, LookupError):
    """The session, conversation or memory entry does not exist."""


class CapabilityError(MemstoreError):
    """The backend does not offer this operation; see ``Capability`` and ``HybridMemory``."""


class ClosedError(MemstoreError, RuntimeError):
    """The memory was shut down: ``initialize()`` opens it again. A call that was cut off by
    ``shutdown()`` (it outlasted the drain timeout) may or may not have been applied."""


class SchemaError(MemstoreError):
    """The stored schema cannot be used by this version of the library."""


class EmbeddingMismatchError(SchemaError):
    """The store's vectors were made by another embedding model (or dimension) than the
    configured one; mixing them would corrupt similarity, so vector work stops until the
    store is re-embedded (``bruno-memstore reindex``) or the original model is configured."""


class BackendError(MemstoreError):
    """The engine or its driver failed; ``cause`` holds the original exception."""


class BackendUnavailableError(BackendError, ConnectionError):
    """The engine cannot be reached (after the configured retries)."""


class BackendTimeoutError(BackendError, TimeoutError):
    """The operation did not finish within the configured timeout."""


class MissingDependencyError(MemstoreError, ImportError):
    """An optional dependency is not installed; the message gives the pip command."""

    def __init__(self, extra: str, package: str, purpose: str = "this backend") -> None:
        super().__init__(
            f"the {package!r} package is required for {purpose}; "
            f"install it with: pip install 'bruno-memstore[{extra}]'"
        )
        self.extra = extra
        self.package = package
