"""The ``bruno-memstore`` command line (install the ``cli`` extra for typer and rich).

Importing this package needs neither; :func:`load_app` and :func:`main` raise or report
:class:`~bruno_memstore.errors.MissingDependencyError` with the pip command when they are
missing.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..errors import MissingDependencyError

if TYPE_CHECKING:
    import typer

__all__ = ["load_app", "main"]

_CLI_PACKAGES = ("typer", "rich")


def load_app() -> typer.Typer:
    """The typer application.

    Raises:
        MissingDependencyError: typer or rich is not installed.
    """
    try:
        from .app import app
    except ModuleNotFoundError as exc:
        top = (exc.name or "").partition(".")[0]
        if top in _CLI_PACKAGES:
            raise MissingDependencyError("cli", top) from exc
        raise
    return app


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``bruno-memstore`` script."""
    try:
        app = load_app()
    except MissingDependencyError as exc:
        sys.stderr.write(f"bruno-memstore: {exc}\n")
        raise SystemExit(1) from None
    app(args=list(argv) if argv is not None else None, prog_name="bruno-memstore")


def __getattr__(name: str) -> Any:
    if name == "app":
        return load_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
