"""The SQS side of the runner: receive, change visibility, delete, dead-letter, queue depth.

boto3 is synchronous; every call runs in a worker thread so the dispatcher's event loop never
blocks. Errors are translated in one place into :class:`SqsError`, which says whether trying
again later may help (throttling, 5xx, network) or not (a bad queue URL, missing permission) —
the dispatcher backs off either way, but reports the second kind as a configuration problem.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from waveflow_operator.runner.deadletter import (
    DEFAULT_MAX_BYTES,
    dead_letter_attributes,
    fit_attributes,
    message_size,
)
from waveflow_operator.runner.protocol import Delivery
from waveflow_operator.runner.spec import QueueSpec

__all__ = ["QueueDepth", "SqsError", "SqsQueue"]

log = logging.getLogger(__name__)

#: Error codes that mean "later may work": throttling and the service's own trouble.
_RETRYABLE_CODES = frozenset({
    "Throttling", "ThrottlingException", "RequestThrottled", "TooManyRequestsException",
    "ServiceUnavailable", "InternalError", "InternalFailure", "RequestTimeout",
    "KmsThrottled", "AWS.SimpleQueueService.RequestThrottled", "SlowDown",
})
#: How long a delete waits for others to share its DeleteMessageBatch call.
_DELETE_LINGER_SECONDS = 0.01
#: SQS's answer to a message over the queue's limit: "... Message must be shorter than N bytes."
_TOO_LONG = re.compile(r"shorter than (\d+) bytes")


class SqsError(Exception):
    """An SQS call failed. ``retryable`` is False for configuration problems."""

    def __init__(self, operation: str, message: str, *, retryable: bool,
                 code: str | None = None) -> None:
        super().__init__(f"{operation}: {message}")
        self.operation = operation
        self.retryable = retryable
        self.code = code


@dataclass(frozen=True)
class QueueDepth:
    """Approximate counts from GetQueueAttributes."""

    visible: int
    in_flight: int
    delayed: int


class SqsQueue:
    """One queue (and its dead-letter queue) behind small async methods."""

    def __init__(self, spec: QueueSpec, client: Any | None = None) -> None:
        self.spec = spec
        self.queue_url = spec.queue_url
        read_timeout = spec.wait_time_seconds + 15
        self._client = client or boto3.client(
            "sqs", region_name=spec.region, endpoint_url=spec.endpoint_url,
            config=Config(retries={"mode": "standard", "max_attempts": 3},
                          connect_timeout=5, read_timeout=read_timeout,
                          max_pool_connections=20))
        self._dlq_url: str | None = spec.dlq_url
        #: The dead-letter queue's MaximumMessageSize, once read (or learnt from a refusal).
        self._dlq_limit: int | None = None
        #: SQS calls get threads of their own: a long poll or a burst of deletes must not
        #: wait behind other work in the loop's default executor.
        self._executor = ThreadPoolExecutor(max_workers=16, thread_name_prefix="sqs")
        self._deletes: list[tuple[str, asyncio.Future[None]]] = []
        self._delete_timer: asyncio.TimerHandle | None = None
        self._batches: set[asyncio.Task[None]] = set()

    # ----------------------------------------------------------------- receive

    async def receive(self, max_messages: int, wait_seconds: int | None = None
                      ) -> list[Delivery]:
        """Long-poll for up to ``max_messages`` (1..10) messages."""
        count = max(1, min(10, max_messages))
        wait = self.spec.wait_time_seconds if wait_seconds is None else wait_seconds
        response = await self._call("receive", "receive_message",
                                    QueueUrl=self.queue_url, MaxNumberOfMessages=count,
                                    WaitTimeSeconds=wait,
                                    VisibilityTimeout=self.spec.visibility_timeout_seconds,
                                    MessageSystemAttributeNames=["SentTimestamp",
                                                                 "ApproximateReceiveCount"])
        return [_received(m) for m in response.get("Messages", [])]

    # ----------------------------------------------------------------- settle

    async def change_visibility(self, receipt_handle: str, seconds: int) -> None:
        """Keep a message invisible for ``seconds`` more (0 makes it visible now)."""
        await self._call("change_visibility", "change_message_visibility",
                         QueueUrl=self.queue_url, ReceiptHandle=receipt_handle,
                         VisibilityTimeout=int(seconds))

    async def change_visibility_batch(self, entries: Mapping[str, tuple[str, int]]
                                      ) -> dict[str, str]:
        """``{id: (receipt_handle, seconds)}`` in batches of 10; returns ``{id: error}``."""
        failed: dict[str, str] = {}
        items = list(entries.items())
        for start in range(0, len(items), 10):
            chunk = items[start:start + 10]
            ids = {f"m{i}": key for i, (key, _) in enumerate(chunk)}
            response = await self._call(
                "change_visibility", "change_message_visibility_batch",
                QueueUrl=self.queue_url,
                Entries=[{"Id": f"m{i}", "ReceiptHandle": handle, "VisibilityTimeout": int(secs)}
                         for i, (_, (handle, secs)) in enumerate(chunk)])
            for entry in response.get("Failed", []):
                failed[ids[entry["Id"]]] = f"{entry.get('Code')}: {entry.get('Message', '')}"
        return failed

    async def delete(self, receipt_handle: str) -> None:
        """Delete a message for good (its outcome is settled).

        Deletes arriving within a few milliseconds of each other go out as one
        DeleteMessageBatch (up to 10): a burst costs a tenth of the requests. Each caller still
        gets its own entry's error.
        """
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._deletes.append((receipt_handle, done))
        if len(self._deletes) >= 10:
            self._flush_deletes()
        elif self._delete_timer is None:
            self._delete_timer = loop.call_later(_DELETE_LINGER_SECONDS, self._flush_deletes)
        await done

    def _flush_deletes(self) -> None:
        if self._delete_timer is not None:
            self._delete_timer.cancel()
            self._delete_timer = None
        while self._deletes:
            batch, self._deletes = self._deletes[:10], self._deletes[10:]
            task = asyncio.get_running_loop().create_task(self._delete_batch(batch))
            self._batches.add(task)
            task.add_done_callback(self._batches.discard)

    async def _delete_batch(self, batch: list[tuple[str, asyncio.Future[None]]]) -> None:
        try:
            response = await self._call(
                "delete", "delete_message_batch", QueueUrl=self.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": handle}
                         for i, (handle, _) in enumerate(batch)])
        except SqsError as error:
            for _, done in batch:
                if not done.done():
                    done.set_exception(error)
            return
        failed = {entry["Id"]: entry for entry in response.get("Failed", [])}
        for i, (_, done) in enumerate(batch):
            if done.done():
                continue
            entry = failed.get(str(i))
            if entry is None:
                done.set_result(None)
            else:
                done.set_exception(SqsError(
                    "delete", f"{entry.get('Code')}: {entry.get('Message', '')}",
                    retryable=not entry.get("SenderFault", False), code=entry.get("Code")))

    async def dead_letter(self, body: str, *, reason: str, detail: str, message_id: str,
                          receive_count: int, group_id: str | None = None,
                          backend_notified: str = "unknown") -> str:
        """Copy ``body`` unchanged to the dead-letter queue with the reason as attributes.

        The body stays byte-for-byte the original so a redrive re-runs the same message; the
        attributes give way when body and attributes would pass the DLQ's MaximumMessageSize
        (:mod:`.deadletter`). Returns the DLQ's MessageId. The caller deletes the original
        afterwards.
        """
        dlq_url = await self.dlq_url()
        attributes = dead_letter_attributes(
            reason=reason, detail=detail, queue=self.spec.name, message_id=message_id,
            backend_notified=backend_notified, receive_count=receive_count)
        params: dict[str, Any] = {"QueueUrl": dlq_url, "MessageBody": body}
        if dlq_url.endswith(".fifo"):
            params["MessageGroupId"] = group_id or message_id
            params["MessageDeduplicationId"] = message_id
        limit = await self._dlq_max_bytes(dlq_url)
        for _ in range(2):  # a limit learnt from a refusal gets one more try
            fitted, dropped = fit_attributes(body, attributes, limit)
            size = message_size(body, fitted)
            if size > limit:
                raise SqsError("send_dlq", f"message {message_id} ({size} bytes) is larger than "
                               f"the dead-letter queue's MaximumMessageSize ({limit}): raise "
                               "it to at least the source queue's", retryable=False)
            if dropped:
                log.warning("dead letter of %s: body of %d bytes leaves no room for %s "
                            "(MaximumMessageSize %d)", message_id, len(body.encode()),
                            ", ".join(dropped), limit)
            try:
                response = await self._call("send_dlq", "send_message",
                                            MessageAttributes=fitted, **params)
            except SqsError as error:
                learnt = _refused_size(error, size)
                if learnt is None or learnt >= limit:
                    raise
                log.warning("the dead-letter queue refused %d bytes; its limit is %d",
                            size, learnt)
                self._dlq_limit = limit = learnt
                continue
            return str(response.get("MessageId", ""))
        raise SqsError("send_dlq", f"message {message_id} was refused as too large twice",
                       retryable=True)

    async def _dlq_max_bytes(self, dlq_url: str) -> int:
        """The DLQ's MaximumMessageSize (read once); SQS's default while it cannot be read."""
        if self._dlq_limit is not None:
            return self._dlq_limit
        try:
            response = await self._call("dlq_lookup", "get_queue_attributes", QueueUrl=dlq_url,
                                        AttributeNames=["MaximumMessageSize"])
            self._dlq_limit = int(response["Attributes"]["MaximumMessageSize"])
        except (SqsError, KeyError, ValueError) as error:
            log.warning("could not read the dead-letter queue's MaximumMessageSize (%s); "
                        "assuming %d bytes", error, DEFAULT_MAX_BYTES)
            return DEFAULT_MAX_BYTES
        return self._dlq_limit

    async def dlq_url(self) -> str:
        """SQS_DLQ_URL, or the target of the queue's RedrivePolicy (looked up once)."""
        if self._dlq_url:
            return self._dlq_url
        response = await self._call("dlq_lookup", "get_queue_attributes",
                                    QueueUrl=self.queue_url, AttributeNames=["RedrivePolicy"])
        policy = response.get("Attributes", {}).get("RedrivePolicy")
        if not policy:
            raise SqsError("dlq_lookup", f"{self.queue_url} has no RedrivePolicy and no "
                           "dead-letter queue is configured (SQS_DLQ_URL / deadLetterQueueUrl)",
                           retryable=False)
        arn = json.loads(policy)["deadLetterTargetArn"]
        name, account = arn.split(":")[-1], arn.split(":")[-2]
        response = await self._call("dlq_lookup", "get_queue_url", QueueName=name,
                                    QueueOwnerAWSAccountId=account)
        self._dlq_url = str(response["QueueUrl"])
        log.info("dead-letter queue of %s is %s (RedrivePolicy)", self.spec.name,
                 self._dlq_url)
        return self._dlq_url

    # ----------------------------------------------------------------- depth

    async def depth(self, queue_url: str | None = None) -> QueueDepth:
        """Approximate visible / in-flight / delayed counts of the queue (or another one)."""
        response = await self._call(
            "depth", "get_queue_attributes", QueueUrl=queue_url or self.queue_url,
            AttributeNames=["ApproximateNumberOfMessages",
                            "ApproximateNumberOfMessagesNotVisible",
                            "ApproximateNumberOfMessagesDelayed"])
        attributes = response.get("Attributes", {})
        return QueueDepth(
            visible=int(attributes.get("ApproximateNumberOfMessages", 0)),
            in_flight=int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
            delayed=int(attributes.get("ApproximateNumberOfMessagesDelayed", 0)))

    # ----------------------------------------------------------------- plumbing

    async def _call(self, operation: str, method: str, **params: Any) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call_sync, operation, method,
                                          params)

    def _call_sync(self, operation: str, method: str, params: dict[str, Any]) -> dict[str, Any]:
        try:
            return getattr(self._client, method)(**params)  # type: ignore[no-any-return]
        except ClientError as error:
            code = str(error.response.get("Error", {}).get("Code", ""))
            status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            retryable = code in _RETRYABLE_CODES or status >= 500 or status == 429
            raise SqsError(operation, str(error), retryable=retryable, code=code) from error
        except BotoCoreError as error:
            # Connection refused, timeouts, DNS: the endpoint may come back.
            raise SqsError(operation, str(error), retryable=True) from error


def _refused_size(error: SqsError, size: int) -> int | None:
    """The limit a refusal of ``size`` bytes as too long names (SQS counts < N as fitting)."""
    if error.code not in ("InvalidParameterValue", "InvalidParameterValueException",
                          "InvalidMessageContents"):
        return None
    found = _TOO_LONG.search(str(error))
    if found is None:
        return None
    return int(found.group(1)) - 1 if int(found.group(1)) <= size else None


def _received(message: Mapping[str, Any]) -> Delivery:
    attributes = message.get("Attributes", {})
    sent = attributes.get("SentTimestamp")
    return Delivery(
        sqs_message_id=str(message["MessageId"]), receipt_handle=str(message["ReceiptHandle"]),
        body=str(message.get("Body", "")),
        sent_timestamp_ms=int(sent) if sent else None,
        receive_count=int(attributes.get("ApproximateReceiveCount", 1)))

