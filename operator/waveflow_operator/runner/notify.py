"""The FAILURE completion the runner owes the backend (CONTRACT.md §2.2), on the job's own
``WebhookClient`` (one client in the project)."""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from waveflow_job.contract import failure_completion

__all__ = ["FailureNotifier", "WebhookFailureNotifier"]

log = logging.getLogger(__name__)


class FailureNotifier(Protocol):
    """Sends the FAILURE completion the runner owes the backend."""

    async def notify_failure(self, *, stem_id: str, task: str | None, code: str,
                             message: str, retryable: bool, message_id: str | None,
                             raw_body: str) -> bool:
        """Deliver it; True when the backend accepted it."""


class WebhookFailureNotifier:
    """:class:`FailureNotifier` over HTTP, signed and retried like every job's webhook."""

    def __init__(self, webhook_url: str, secret: str | None = None, *, budget: float = 30.0,
                 timeout: float = 10.0, backoff: float = 0.5) -> None:
        from waveflow_job.webhooks import WebhookClient

        self._client = WebhookClient(webhook_url, secret, timeout=timeout, budget=budget,
                                     backoff=backoff)

    async def notify_failure(self, *, stem_id: str, task: str | None, code: str,
                             message: str, retryable: bool, message_id: str | None,
                             raw_body: str) -> bool:
        from waveflow_job.errors import WebhookUndelivered

        failure = failure_completion(stem_id=stem_id, task=task, code=code, message=message,
                                     retryable=retryable, message_id=message_id,
                                     raw_body=raw_body)
        try:
            await asyncio.to_thread(self._client.send, failure)
        except WebhookUndelivered as error:
            log.error("FAILURE completion for stem %s not delivered: %s", stem_id, error)
            return False
        return True

    def close(self) -> None:
        self._client.close()
