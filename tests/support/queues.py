"""SQS queues on the moto server, shaped like production: a main queue and its dead-letter queue."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from support.aws import MotoEndpoint
from waveflow_dev.emulator import create_queues
from waveflow_job.contract import Task, message_document

__all__ = ["Queues", "backend_message", "make_queues"]

@dataclass(frozen=True)
class Queues:
    """A main queue whose RedrivePolicy names ``dlq_url``."""

    endpoint: MotoEndpoint
    url: str
    dlq_url: str

    def client(self) -> Any:
        return self.endpoint.client("sqs")

    def send(self, body: str | dict[str, Any]) -> str:
        """Send one message (a dict is JSON-encoded like the backend does); returns its id."""
        text = body if isinstance(body, str) else json.dumps(body)
        return str(self.client().send_message(QueueUrl=self.url, MessageBody=text)["MessageId"])

    def counts(self, url: str | None = None) -> tuple[int, int]:
        """(visible, not visible) messages, as SQS reports them."""
        attributes = self.client().get_queue_attributes(
            QueueUrl=url or self.url,
            AttributeNames=["ApproximateNumberOfMessages",
                            "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
        return (int(attributes["ApproximateNumberOfMessages"]),
                int(attributes["ApproximateNumberOfMessagesNotVisible"]))

    def drain_dlq(self) -> list[dict[str, Any]]:
        """Receive (and delete) everything in the dead-letter queue, with message attributes."""
        client = self.client()
        found: list[dict[str, Any]] = []
        while True:
            response = client.receive_message(QueueUrl=self.dlq_url, MaxNumberOfMessages=10,
                                              MessageAttributeNames=["All"], WaitTimeSeconds=0)
            messages = response.get("Messages", [])
            if not messages:
                return found
            for message in messages:
                found.append(message)
                client.delete_message(QueueUrl=self.dlq_url,
                                      ReceiptHandle=message["ReceiptHandle"])


def make_queues(endpoint: MotoEndpoint, name: str = "waveflow-test", *,
                visibility_timeout: int = 30, max_receive_count: int = 10) -> Queues:
    """Create ``name`` and ``name-dlq`` with a RedrivePolicy between them."""
    pair = create_queues(endpoint.client("sqs"), name, visibility_timeout=visibility_timeout,
                         max_receive_count=max_receive_count)
    return Queues(endpoint, pair.url, pair.dlq_url)


def backend_message(task: str, stem_id: str, *, filepath: str = "audio/stem.wav",
                    audio_hash: str | None = None, user_id: str = "user-1",
                    track_id: str = "track-1", **extra: Any) -> dict[str, Any]:
    """A body exactly as the backend sends it (``contract.message_document``)."""
    kwargs: dict[str, Any] = {"userId": user_id, "trackId": track_id, "stemId": stem_id,
                              "filepath": filepath, **extra}
    if audio_hash is not None:
        kwargs["audio_hash"] = audio_hash
    return message_document(Task(task), kwargs)

