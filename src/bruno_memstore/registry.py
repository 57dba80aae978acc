"""URL scheme -> backend class, imported lazily; third parties plug in by entry point.

Built-in schemes are this package's entry points, known even when their extra is not
installed, so that using one says which ``pip install`` to run instead of "unknown scheme".
"""

from __future__ import annotations

import difflib
import functools
import importlib
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING
from urllib.parse import unquote_plus

from .errors import MissingDependencyError, UnknownSchemeError
from .url import MemoryURL

if TYPE_CHECKING:
    from .base import MemoryBackend

__all__ = [
    "SHARED_URL_OPTIONS",
    "BackendSpec",
    "backend_specs",
    "extra_of",
    "known_schemes",
    "open_memory",
    "register",
    "resolve",
]

ENTRY_POINT_GROUP = "bruno.memory_backends"


@dataclass(frozen=True)
class BackendSpec:
    """Where a scheme's class lives and which extra installs its client."""

    target: str  # "module:Class"
    extra: str | None = None
    package: str | None = None  # import name of the client, checked before importing


def _distribution_name(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return (getattr(dist, "name", "") or "").replace("_", "-").lower()


@functools.cache
def _builtin() -> dict[str, BackendSpec]:
    # The one table of built-in backends is this package's own entry points (pyproject.toml),
    # which bruno-core's plugin discovery reads too; each names the extra that installs its
    # client in brackets.
    return {
        ep.name: BackendSpec(ep.value.split("[")[0].strip(), ep.extras[0] if ep.extras else None)
        for ep in entry_points(group=ENTRY_POINT_GROUP)
        if _distribution_name(ep) == "bruno-memstore"
    }


_registered: dict[str, BackendSpec | type[MemoryBackend]] = {}


def register(scheme: str, backend: str | type[MemoryBackend], extra: str | None = None) -> None:
    """Make ``scheme://`` open ``backend`` (a class or a ``"module:Class"`` string)."""
    _registered[scheme.lower()] = (
        BackendSpec(backend, extra) if isinstance(backend, str) else backend
    )


def backend_specs() -> dict[str, BackendSpec]:
    """Built-in and registered schemes with their class path and extra (classes as given)."""
    specs: dict[str, BackendSpec] = {
        name: BackendSpec(t) for name, t in _entry_point_schemes().items()
    }
    specs.update(_builtin())
    for name, spec in _registered.items():
        specs[name] = spec if isinstance(spec, BackendSpec) else BackendSpec(_path_of(spec))
    return dict(sorted(specs.items()))


def _path_of(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def known_schemes() -> list[str]:
    """Every scheme ``open_memory`` accepts: built-ins, registered and entry-point ones."""
    return sorted(set(_builtin()) | set(_registered) | set(_entry_point_schemes()))


def _entry_point_schemes() -> dict[str, str]:
    return {ep.name: ep.value.split("[")[0].strip() for ep in entry_points(group=ENTRY_POINT_GROUP)}


def extra_of(scheme: str) -> str | None:
    """The extra that installs ``scheme``'s client (``None`` when it needs none or is unknown)."""
    spec = backend_specs().get(scheme.lower())
    return spec.extra if spec is not None else None


def resolve(scheme: str) -> type[MemoryBackend]:
    """The backend class for ``scheme``; imports its module on first use."""
    scheme = scheme.lower()
    spec: BackendSpec | type[MemoryBackend] | None = _registered.get(scheme) or _builtin().get(
        scheme
    )
    if spec is None:
        target = _entry_point_schemes().get(scheme)
        if target is None:
            known = known_schemes()
            close = difflib.get_close_matches(scheme, known, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UnknownSchemeError(
                "url", f"unknown scheme {scheme!r}; known schemes: {', '.join(known)}.{hint}"
            )
        spec = BackendSpec(target)
    if isinstance(spec, type):
        return spec
    module_name, _, attr = spec.target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        # Only a missing *client* means a missing extra; a missing backend module is a bug.
        missing = exc.name if isinstance(exc, ModuleNotFoundError) else None
        ours = missing is not None and (
            missing == "bruno_memstore" or missing.startswith("bruno_memstore.")
        )
        if spec.extra is not None and missing and not ours:
            raise MissingDependencyError(spec.extra, missing) from exc
        raise
    return getattr(module, attr)


SHARED_URL_OPTIONS: dict[str, type] = {
    "erasure_log": str,
    "telemetry": bool,
    "trace_content": bool,
    "message_ttl": float,
    "conversation_ttl": float,
    "session_ttl": float,
    "memory_ttl": float,
    "sweep_interval": float,
    "retention_keep_last": int,
    "retention_max_message_age": float,
    "retention_max_conversation_age": float,
}
"""Query options every backend takes (``MemoryBackend``'s own), read here before the URL
reaches the backend: ``?erasure_log=/var/log/erasures.jsonl&telemetry=1``. The
``retention_*`` options make the store's ``retention`` policy (``retention_keep_last=50``)."""

_RETENTION_PREFIX = "retention_"


def open_memory(url: str, **options: object) -> MemoryBackend:
    """Build the memory a URL names, e.g. ``open_memory("sqlite:///memory.db")``.

    Keyword options are passed to the backend's constructor (they win over the same option
    in the URL). Nothing connects until first use.
    """
    parsed = MemoryURL.parse(url)
    if SHARED_URL_OPTIONS.keys() & parsed.query.keys():
        for name, kind in SHARED_URL_OPTIONS.items():
            if name in parsed.query:
                options.setdefault(name, parsed.option(name, kind))
        parsed = MemoryURL.parse(_without_options(url, SHARED_URL_OPTIONS.keys()))
        rules = {
            name.removeprefix(_RETENTION_PREFIX): options.pop(name)
            for name in list(options)
            if name.startswith(_RETENTION_PREFIX)
        }
        if rules:
            options.setdefault("retention", rules)
    cls = resolve(parsed.scheme)
    from_url = getattr(cls, "from_url", None)
    if from_url is None:
        return cls(**options)
    return from_url(parsed, **options)


def _without_options(url: str, names: Iterable[str]) -> str:
    """``url`` without the query options ``names`` (nested URLs in other values untouched)."""
    head, sep, query = url.partition("?")
    if not sep:
        return url
    drop = set(names)
    kept = [p for p in query.split("&") if unquote_plus(p.partition("=")[0]) not in drop]
    return f"{head}?{'&'.join(kept)}" if kept else head
