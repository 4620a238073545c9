"""The field types the wire formats share, each carrying its own JSON Schema constraints.

A field is ``Annotated[python type, {JSON Schema keywords}]``: the Python type is what the code
builds, the keywords are what the exported schema adds (:mod:`waveflow_job.contract.schemas`
merges them over the schema derived from the type). Writing a constraint here is the only way
to get it into ``docs/schemas``.

No ``from __future__ import annotations`` in the modules that define wire types: Python 3.11's
``TypedDict`` cannot see ``NotRequired`` in string annotations.
"""

from datetime import UTC, datetime
from typing import Annotated

__all__ = ["DEFAULT_NUM_PEAKS", "MAX_KEY_BYTES", "MAX_MESSAGE_BYTES", "MAX_NUM_PEAKS", "Id", "Key",
           "LowerSha256", "NumPeaks", "Sha256", "Text", "Timestamp", "utc_now_iso"]

DEFAULT_NUM_PEAKS = 1024
MAX_NUM_PEAKS = 65536
#: S3's own limit on key length, in UTF-8 bytes.
MAX_KEY_BYTES = 1024
#: The largest body a job can be handed, in UTF-8 bytes: SQS's own limit (1 MiB), and what one
#: Kubernetes ConfigMap holds. A larger body is refused as ``MESSAGE_TOO_LARGE``, never retried.
MAX_MESSAGE_BYTES = 1024 * 1024

#: A string that must not be empty (the backend validates ``@IsNotEmpty``).
Text = Annotated[str, {"minLength": 1}]
#: userId, trackId, stemId: strings; integers are accepted on the way in (JavaScript numbers).
Id = Annotated[str, {"type": ["string", "integer"], "minLength": 1}]
#: An S3 key in the configured bucket.
Key = Annotated[str, {"minLength": 1, "maxLength": MAX_KEY_BYTES,
                      "description": "S3 key in the configured bucket; no leading '/', "
                                     "no '.' or '..' segments, no control characters "
                                     "(U+0000-U+001F, U+007F-U+009F), no U+2028/U+2029, "
                                     "no noncharacters (U+FDD0-U+FDEF, U+FFFE, U+FFFF)"}]
#: SHA-256 as the backend may send it (either case; the job lowercases it).
Sha256 = Annotated[str, {"pattern": "^[0-9a-fA-F]{64}$", "description": "SHA-256, hex"}]
#: SHA-256 as WaveFlow sends it: 64 lowercase hex characters (the backend checks exactly that).
LowerSha256 = Annotated[str, {"pattern": "^[0-9a-f]{64}$"}]
#: UTC with milliseconds and ``Z``, as the backend writes its own timestamps.
Timestamp = Annotated[str, {"description": "ISO 8601, UTC, e.g. 2026-11-26T08:36:48.817Z"}]
#: How many peaks a message asks for; a digit string is accepted on the way in.
NumPeaks = Annotated[int, {"type": ["integer", "string"], "minimum": 1,
                           "maximum": MAX_NUM_PEAKS, "default": DEFAULT_NUM_PEAKS}]


def utc_now_iso(now: datetime | None = None) -> str:
    """UTC with milliseconds and ``Z``, as the backend writes its own timestamps."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
