"""The webhook client: one POST to the backend, signed, retried within a time budget.

Used by the job for ``hash-check`` and ``completion``, and by the runner for the FAILURE
completion it sends when a message's retries are exhausted (CONTRACT.md §2).

- Any 2xx is success (NestJS answers 201).
- Connection errors, timeouts, 429 and 5xx are retried with exponential backoff and full
  jitter; ``Retry-After`` (seconds or an HTTP date) is honoured; all within ``budget`` seconds.
- Every attempt carries the same body and the same ``X-WaveFlow-Delivery``, so the backend can
  drop repeats; the signature is recomputed per attempt (its timestamp moves on).
- Other 4xx are not retried: the same request would be refused again.
  :class:`WebhookRefused` says which status and what the backend answered.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import random
import time
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

import requests

from waveflow_job.contract import ErrorCode, Webhook, WebhookEvent, dumps_strict
from waveflow_job.errors import WebhookUndelivered

if TYPE_CHECKING:
    from waveflow_job.config import JobConfig

__all__ = ["WebhookClient", "WebhookRefused", "sign", "user_agent"]

log = logging.getLogger(__name__)

_CONNECT_TIMEOUT = 5.0
_MAX_BACKOFF = 10.0


class WebhookRefused(WebhookUndelivered):
    """The backend answered with a 4xx other than 429: retrying now would not help.

    Still transient for the job (exit 1): a wrong URL or secret is fixed by an operator, after
    which a retry or a redrive succeeds; the message itself was not at fault.
    """

    def __init__(self, url: str, status: int, answer: str) -> None:
        super().__init__(ErrorCode.WEBHOOK_UNDELIVERED,
                         f"POST {url} was refused with HTTP {status}: {answer[:500]}")
        self.status = status
        self.answer = answer


def signature_hex(secret: str, timestamp: int, raw_body: bytes) -> str:
    """The ``v1`` value: hex HMAC-SHA256(secret, "<t>.<raw body>"); receivers recompute it."""
    message = f"{timestamp}.".encode() + raw_body
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def sign(secret: str, timestamp: int, raw_body: bytes) -> str:
    """``X-WaveFlow-Signature``: ``t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``."""
    return f"t={timestamp},v1={signature_hex(secret, timestamp, raw_body)}"


def user_agent() -> str:
    """``waveflow/<version>``, from the installed distribution."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"waveflow/{version('waveflow')}"
    except PackageNotFoundError:
        return "waveflow/0+unknown"


class WebhookClient:
    """POSTs webhook bodies to ``{base_url}/{event}``; one instance per process is plenty."""

    def __init__(self, base_url: str, secret: str | None = None, *, timeout: float = 10.0,
                 budget: float = 60.0, backoff: float = 0.5,
                 session: requests.Session | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.base_url = base_url.rstrip("/")
        self.secret = secret or None
        self.timeout = timeout
        self.budget = budget
        self.backoff = backoff
        self._session = session or requests.Session()
        self._own_session = session is None
        self._sleep = sleep
        self._clock = clock
        self._user_agent = user_agent()

    @classmethod
    def from_config(cls, config: JobConfig) -> WebhookClient:
        return cls(config.webhook_url, config.webhook_secret, timeout=config.webhook_timeout,
                   budget=config.webhook_budget, backoff=config.webhook_backoff)

    def close(self) -> None:
        if self._own_session:
            self._session.close()

    def __enter__(self) -> WebhookClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def send(self, webhook: Webhook) -> int:
        """Deliver a webhook the contract built (e.g. ``contract.failure_completion``)."""
        return self.post(webhook.event, webhook.body, delivery=webhook.delivery)

    def post(self, event: WebhookEvent, body: Mapping[str, Any], *, delivery: str) -> int:
        """Deliver ``body``; returns the 2xx status. Raises :class:`WebhookUndelivered`."""
        url = f"{self.base_url}/{event.value}"
        raw = dumps_strict(body)
        deadline = self._clock() + self.budget
        attempt = 0
        while True:
            attempt += 1
            try:
                status = self._attempt(url, event, raw, delivery, deadline - self._clock())
            except _Retry as retry:
                wait = retry.wait
                if wait is None:
                    ceiling = min(_MAX_BACKOFF, self.backoff * 2 ** min(attempt - 1, 30))
                    wait = random.uniform(0, ceiling)
                if wait >= deadline - self._clock():
                    raise WebhookUndelivered(
                        ErrorCode.WEBHOOK_UNDELIVERED,
                        f"POST {url} not accepted after {attempt} attempt(s) within "
                        f"{self.budget:g}s: {retry.problem}") from None
                log.warning("webhook attempt failed, retrying",
                            extra={"event": event.value, "delivery": delivery,
                                   "attempt": attempt, "problem": retry.problem,
                                   "retry_in": round(wait, 3)})
                self._sleep(wait)
                continue
            log.info("webhook delivered", extra={"event": event.value, "delivery": delivery,
                                                 "attempt": attempt, "status": status})
            return status

    def _attempt(self, url: str, event: WebhookEvent, raw: bytes, delivery: str,
                 remaining: float) -> int:
        """One POST: the 2xx status, or :class:`_Retry`, or :class:`WebhookRefused`."""
        headers = {
            "Content-Type": "application/json",
            "User-Agent": self._user_agent,
            "X-WaveFlow-Event": event.value,
            "X-WaveFlow-Delivery": delivery,
        }
        if self.secret:
            headers["X-WaveFlow-Signature"] = sign(self.secret, int(time.time()), raw)
        read_timeout = max(0.1, min(self.timeout, remaining))
        try:
            response = self._session.post(
                url, data=raw, headers=headers,
                timeout=(min(_CONNECT_TIMEOUT, read_timeout), read_timeout))
        except requests.RequestException as error:
            raise _Retry(f"{type(error).__name__}: {error}", None) from None
        with response:
            status = response.status_code
            if 200 <= status < 300:
                return status
            if status == 429 or status >= 500:
                raise _Retry(f"HTTP {status}", retry_after(response.headers.get("Retry-After")))
            raise WebhookRefused(url, status, response.text)


class _Retry(Exception):
    """One attempt failed in a way worth retrying; ``wait`` is the server's Retry-After."""

    def __init__(self, problem: str, wait: float | None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.wait = wait


def retry_after(header: str | None, now: Callable[[], float] = time.time) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date), or None."""
    if not header:
        return None
    header = header.strip()
    if header.isdigit():
        return float(header)
    try:
        moment = parsedate_to_datetime(header)
    except (TypeError, ValueError, IndexError):
        return None
    if moment is None:
        return None
    return max(0.0, moment.timestamp() - now())
