"""Every wire format WaveFlow speaks, in one package the job and the operator both import.

- :mod:`.messages` and :mod:`.parsing`: the backend's SQS messages in the three accepted
  envelopes, built and parsed (CONTRACT.md §1);
- :mod:`.webhooks`: webhook bodies, the delivery id and the one FAILURE builder (§2);
- :mod:`.waveform`: the waveform JSON document and its S3 key (§3);
- :mod:`.results`: exit codes, outcomes, error codes and the job's one-line summary (§4);
- :mod:`.env`: the names of the environment variables a runner passes to the job (§4);
- :mod:`.schemas`: JSON Schemas derived from the types above, exported to ``docs/schemas``
  by ``python -m waveflow_job.contract``;
- :mod:`.fields`: the field types they share.

Pure: no I/O, no third-party imports (no numpy), so the job starts fast and the operator can
validate a message without pulling in audio libraries.
"""

from waveflow_job.contract import env
from waveflow_job.contract.fields import (
    DEFAULT_NUM_PEAKS,
    MAX_KEY_BYTES,
    MAX_MESSAGE_BYTES,
    MAX_NUM_PEAKS,
    utc_now_iso,
)
from waveflow_job.contract.messages import (
    TASK_MODULE,
    AnalysisKwargs,
    DuplicateKwargs,
    Envelope,
    HashKwargs,
    StemMessage,
    Task,
    flat_envelope,
    json_envelope,
    kombu_envelope,
    message_document,
    message_id_for,
    task_name,
)
from waveflow_job.contract.parsing import InvalidMessage, parse_message
from waveflow_job.contract.results import ErrorCode, ExitCode, JobSummary, Outcome
from waveflow_job.contract.schemas import json_schemas, write_schemas
from waveflow_job.contract.waveform import (
    WAVEFORM_PREFIX,
    WaveformDocument,
    detail_waveform_key,
    waveform_key,
)
from waveflow_job.contract.webhooks import (
    AnalysisResult,
    CompletionBody,
    DuplicateDeletedResult,
    FailureResult,
    HashCheckBody,
    Webhook,
    WebhookEvent,
    analysis_success_body,
    delivery_id,
    dumps_strict,
    duplicate_deleted_body,
    failure_body,
    failure_completion,
    hash_check_body,
)

__all__ = [
    "DEFAULT_NUM_PEAKS",
    "MAX_KEY_BYTES",
    "MAX_MESSAGE_BYTES",
    "MAX_NUM_PEAKS",
    "TASK_MODULE",
    "WAVEFORM_PREFIX",
    "AnalysisKwargs",
    "AnalysisResult",
    "CompletionBody",
    "DuplicateDeletedResult",
    "DuplicateKwargs",
    "Envelope",
    "ErrorCode",
    "ExitCode",
    "FailureResult",
    "HashCheckBody",
    "HashKwargs",
    "InvalidMessage",
    "JobSummary",
    "Outcome",
    "StemMessage",
    "Task",
    "WaveformDocument",
    "Webhook",
    "WebhookEvent",
    "analysis_success_body",
    "delivery_id",
    "detail_waveform_key",
    "dumps_strict",
    "duplicate_deleted_body",
    "env",
    "failure_body",
    "failure_completion",
    "flat_envelope",
    "hash_check_body",
    "json_envelope",
    "json_schemas",
    "kombu_envelope",
    "message_document",
    "message_id_for",
    "parse_message",
    "task_name",
    "utc_now_iso",
    "waveform_key",
    "write_schemas",
]
