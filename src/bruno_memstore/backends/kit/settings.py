"""Constructor settings checked one way, each refusal naming its argument."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...errors import InvalidArgumentError

__all__ = ["positive_int", "positive_seconds", "setting"]


def positive_int(name: str, value: Any) -> int:
    """``value``, refused unless an int (not a bool) of at least 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgumentError(name, "must be a positive int")
    return value


def positive_seconds(name: str, value: Any) -> float:
    """``value``, refused unless a number (not a bool) above 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise InvalidArgumentError(name, "must be a positive number of seconds")
    return value


def setting(
    given: Mapping[str, Any], name: str, kind: type, default: Any, low: float | None = None
) -> Any:
    """``given[name]`` checked to be a ``kind`` (an int passes as a float, a bool as nothing
    else) of at least ``low``; ``default`` when it is missing or ``None``."""
    value = given.get(name)
    if value is None:
        return default
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise InvalidArgumentError(name, f"expected {kind.__name__}, got {type(value).__name__}")
    if low is not None and value < low:
        raise InvalidArgumentError(name, f"must be at least {low:g}, got {value!r}")
    return value
