"""What a dead letter carries besides the body, made to fit the dead-letter queue: pure.

SQS counts message attributes (each one's name, data type and value) toward the queue's
``MaximumMessageSize``, so a body close to the limit plus our attributes could be refused
forever, and its settling would never end. The body is the one thing never touched (a redrive
must re-run the same message); what is ours gives way instead, least needed first: the detail
is shortened, then attributes are dropped in :data:`DROP_ORDER`, down to none. A dead letter
that lost some says so in ``WaveflowAttributesDropped`` when that still fits.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["DEFAULT_MAX_BYTES", "DROP_ORDER", "attributes_size", "dead_letter_attributes",
           "fit_attributes", "message_size"]

#: SQS's historic default MaximumMessageSize; assumed when the queue's own cannot be read.
DEFAULT_MAX_BYTES = 262_144
#: A DLQ message attribute value may not be empty and is kept short.
ATTRIBUTE_LIMIT = 1024
#: Dropped in this order when the body leaves too little room (the source MessageId last: a
#: redrive deduplicates on it).
DROP_ORDER = ("WaveflowReasonDetail", "WaveflowSourceQueue", "WaveflowReceiveCount",
              "WaveflowBackendNotified", "WaveflowReason", "WaveflowSourceMessageId")
_DROPPED = "WaveflowAttributesDropped"
#: The shortest detail worth keeping; below it the attribute is dropped instead.
_MIN_DETAIL = 16

Attributes = dict[str, dict[str, Any]]


def dead_letter_attributes(*, reason: str, detail: str, queue: str, message_id: str,
                           backend_notified: str, receive_count: int) -> Attributes:
    """Every attribute a dead letter carries, as SendMessage takes them."""
    values = {
        "WaveflowReason": reason, "WaveflowReasonDetail": detail,
        "WaveflowSourceQueue": queue, "WaveflowSourceMessageId": message_id,
        # Did the backend accept the FAILURE completion? "no": tell it after a redrive.
        "WaveflowBackendNotified": backend_notified,
    }
    attributes: Attributes = {
        key: {"DataType": "String", "StringValue": (value or "-")[:ATTRIBUTE_LIMIT]}
        for key, value in values.items()}
    attributes["WaveflowReceiveCount"] = {"DataType": "Number",
                                          "StringValue": str(receive_count)}
    return attributes


def attributes_size(attributes: Mapping[str, Mapping[str, Any]]) -> int:
    """Bytes SQS counts for ``attributes``: each name, data type and value."""
    return sum(len(name.encode()) + len(str(a["DataType"]).encode())
               + len(str(a["StringValue"]).encode()) for name, a in attributes.items())


def message_size(body: str, attributes: Mapping[str, Mapping[str, Any]]) -> int:
    return len(body.encode("utf-8")) + attributes_size(attributes)


def fit_attributes(body: str, attributes: Attributes, limit: int) -> tuple[Attributes, list[str]]:
    """``attributes`` shrunk until body and attributes fit in ``limit`` bytes; and the names
    dropped. With a body over the limit on its own nothing fits: every attribute is dropped
    (the caller cannot send it at all)."""
    room = limit - len(body.encode("utf-8"))
    kept = {name: dict(a) for name, a in attributes.items()}
    if attributes_size(kept) <= room:
        return kept, []
    detail = kept.get("WaveflowReasonDetail")
    if detail is not None:
        others = attributes_size({n: a for n, a in kept.items() if n != "WaveflowReasonDetail"})
        spare = room - others - len(b"WaveflowReasonDetail") - len(b"String")
        value = str(detail["StringValue"]).encode()
        if spare >= _MIN_DETAIL:
            detail["StringValue"] = value[:spare].decode("utf-8", "ignore") or "-"
            return kept, []
    dropped: list[str] = []
    for name in DROP_ORDER:
        if attributes_size(kept) <= room:
            break
        if kept.pop(name, None) is not None:
            dropped.append(name)
    marker = {_DROPPED: {"DataType": "String", "StringValue": ",".join(dropped)}}
    if dropped and attributes_size({**kept, **marker}) <= room:
        kept.update(marker)
    return kept, dropped
