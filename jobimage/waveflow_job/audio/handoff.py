"""A bounded hand-off of decoded blocks to a second thread, which reduces them in order.

Why: a source decoded in one sequential pass (PyAV: M4A, WebM, ADTS; any stream whose length
is not trusted) would otherwise decode and reduce on one thread while a second CPU idles.
FFmpeg's decoder, libsndfile, ``readinto`` and the C kernels release the GIL, so the decoder
(the caller's thread) and the reduction (the worker) overlap; the slower of the two sets the
pace instead of their sum.

Guarantees:

- Memory stays bounded whatever the length: at most ``depth`` blocks wait in the queue, one is
  being reduced and one decoded.
- Blocks are reduced in the order they were handed over, by one thread, exactly as a single
  thread would: results are identical.
- Errors surface as they would in one thread: the first failure in stream order wins. When the
  worker fails, the next :meth:`Handoff.put` raises its exception (the decoder stops); when the
  decoder fails, the blocks it handed over before are reduced first, and a failure among those
  (earlier in the stream) is raised instead of the decoder's.
- No thread outlives the ``with`` block, and neither side can wait forever on a dead partner:
  a failed worker keeps draining the queue, and leaving the block (normally or not) always
  ends the queue and joins the worker.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Generic, TypeVar

__all__ = ["Handoff"]

T = TypeVar("T")

#: Blocks that may wait for the worker: two absorb the jitter of either side (an FFmpeg packet
#: boundary, a detail write) at a few hundred KiB.
DEPTH = 2


class _End:
    """Put after the last block: the worker returns."""


_END = _End()


class Handoff(Generic[T]):
    """``with Handoff(reduce) as put: put(block)...``: ``reduce`` runs on every block, in
    order, in a worker thread."""

    def __init__(self, reduce: Callable[[T], None], *, depth: int = DEPTH,
                 name: str = "reduce") -> None:
        self._reduce = reduce
        self._queue: queue.Queue[T | _End] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        # Daemon only as a last resort: ``__exit__`` always ends and joins it.
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)

    def __enter__(self) -> Callable[[T], None]:
        self._thread.start()
        return self.put

    def put(self, item: T) -> None:
        """Hand ``item`` over (waits while ``depth`` items wait); raises the worker's error."""
        if self._error is not None:
            raise self._error
        self._queue.put(item)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._queue.put(_END)  # never waits long: the worker takes items, failed or not
        self._thread.join()
        if self._error is not None and self._error is not exc:
            # Raised by an item handed over before whatever stopped the caller (if anything):
            # that item came first in the stream, so its error is the one a single thread
            # would have raised.
            raise self._error

    def _work(self) -> None:
        while not isinstance(item := self._queue.get(), _End):
            if self._error is None:
                try:
                    self._reduce(item)
                except BaseException as exc:  # raised again in the caller's thread
                    self._error = exc
