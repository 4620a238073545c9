"""What a dispatcher shows: the WaveflowQueue's status counts, and ``waveflow local``'s log."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

__all__ = ["DispatcherStatus"]


@dataclass
class DispatcherStatus:
    """Counts and the last poll's verdict."""

    received: int = 0
    running: int = 0
    succeeded: int = 0
    rejected: int = 0
    failed: int = 0
    dead_lettered: int = 0
    #: Whether the last ReceiveMessage worked.
    polling: bool = False
    last_poll_time: datetime | None = None
    last_error: str | None = None
    #: False when the last error looks like configuration (bad URL, permission), not weather.
    last_error_retryable: bool = True
