"""Waiting for something that happens in another thread or process, with one deadline rule.

``wait_for`` blocks (plain tests, threads, child processes); ``eventually`` awaits (asyncio
tests, where blocking would stop what is being waited for). Both poll ``predicate`` until it
returns something truthy, return that value, and fail the test naming what never happened.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["eventually", "wait_for"]


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, message: str = "condition",
             *, interval: float = 0.05) -> Any:
    """Block until ``predicate()`` is truthy; fail after ``timeout`` seconds."""
    for _ in _until(timeout, message):
        value = predicate()
        if value:
            return value
        time.sleep(interval)


async def eventually(predicate: Callable[[], Any], timeout: float = 20.0,
                     message: str = "condition", *, interval: float = 0.05) -> Any:
    """Await until ``predicate()`` is truthy; fail after ``timeout`` seconds."""
    for _ in _until(timeout, message):
        value = predicate()
        if value:
            return value
        await asyncio.sleep(interval)


def _until(timeout: float, message: str) -> Iterator[None]:
    """One more try while the deadline has not passed (the last try may end just after it)."""
    deadline = time.monotonic() + timeout
    while True:
        yield
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {message}")
