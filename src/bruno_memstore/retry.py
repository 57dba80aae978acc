"""Bounded retries with exponential backoff, for transient engine errors only."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)

__all__ = ["RetryPolicy", "retry_transient"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a failed idempotent operation is retried.

    Attributes:
        attempts: total tries, the first included (1 disables retries).
        initial_backoff: first wait, in seconds; doubles each time, with jitter.
        max_backoff: cap on a single wait, in seconds.
        deadline: give up once this many seconds have passed since the first failure.
    """

    attempts: int = 4
    initial_backoff: float = 0.05
    max_backoff: float = 2.0
    deadline: float = 15.0


async def retry_transient(
    call: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    is_transient: Callable[[BaseException], bool],
) -> T:
    """Call again after a transient failure, up to the policy's bounds; re-raise the last error.

    The caller has already made the first attempt, so this makes ``attempts - 1`` more.
    """
    retrying = AsyncRetrying(
        stop=stop_after_attempt(max(policy.attempts - 1, 1)) | stop_after_delay(policy.deadline),
        wait=wait_exponential_jitter(
            multiplier=policy.initial_backoff, max=policy.max_backoff, jitter=policy.initial_backoff
        ),
        retry=retry_if_exception(is_transient),
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            return await call()
    raise AssertionError("unreachable")  # pragma: no cover
