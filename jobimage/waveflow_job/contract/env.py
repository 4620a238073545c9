"""Every environment variable a runner passes to ``waveflow-job`` (CONTRACT.md §4).

The runner writes them (``waveflow_operator.runner.jobenv`` for both launchers, the Job builder for
Kubernetes) and the job reads them (``waveflow_job.config``, ``waveflow_job.cli``): both sides
name them only through these constants, so a variable cannot be set under one name and read
under another. What each one means is documented where it is read (``JobConfig``).
"""

__all__ = ["BUCKET", "DETAIL_BITS", "DETAIL_SAMPLES_PER_PIXEL",
           "ENDPOINT_URL", "JOB_TUNING", "LOG_LEVEL", "LOUDNESS", "MAX_CHANNELS",
           "MAX_DETAIL_BYTES",
           "MAX_DURATION_SECONDS", "MAX_FILE_BYTES", "MAX_NUM_PEAKS", "MAX_SAMPLE_RATE",
           "MAX_WAVEFORM_VALUES", "MESSAGE", "MIN_SAMPLE_RATE", "QUEUE_URL", "REGION",
           "REGION_FALLBACK", "RESERVED", "S3_CONNECT_TIMEOUT_SECONDS", "S3_MAX_ATTEMPTS",
           "S3_READ_TIMEOUT_SECONDS", "SCRATCH_DIR", "SUMMARY_FILE", "UPLOAD_PREFIXES",
           "WEBHOOK_BACKOFF_SECONDS", "WEBHOOK_BUDGET_SECONDS", "WEBHOOK_SECRET",
           "WEBHOOK_TIMEOUT_SECONDS", "WEBHOOK_URL"]

#: The raw SQS body, byte for byte: the job parses it itself.
MESSAGE = "WAVEFLOW_MESSAGE"
#: Where the job writes its one-line JSON summary (the termination-message path in a Job).
SUMMARY_FILE = "WAVEFLOW_SUMMARY_FILE"
#: The only place the job writes scratch files.
SCRATCH_DIR = "TMPDIR"

# The old service's variables.
BUCKET = "S3_BUCKET_NAME"
QUEUE_URL = "SQS_QUEUE_URL"
WEBHOOK_URL = "WEBHOOK_URL"
LOG_LEVEL = "LOG_LEVEL"
REGION = "AWS_REGION"
#: Set beside ``AWS_REGION`` for tools that read only this one; the job reads it as a fallback.
REGION_FALLBACK = "AWS_DEFAULT_REGION"
#: boto3's own variable, for emulators (moto, MinIO, LocalStack).
ENDPOINT_URL = "AWS_ENDPOINT_URL"
#: In Kubernetes it comes from a Secret, never inline in the Job.
WEBHOOK_SECRET = "WEBHOOK_SECRET"
UPLOAD_PREFIXES = "UPLOAD_PREFIXES"

# The job's own tuning (limits, timeouts, retries).
MAX_FILE_BYTES = "WAVEFLOW_MAX_FILE_BYTES"
MAX_DURATION_SECONDS = "WAVEFLOW_MAX_DURATION_SECONDS"
MAX_NUM_PEAKS = "WAVEFLOW_MAX_NUM_PEAKS"
MIN_SAMPLE_RATE = "WAVEFLOW_MIN_SAMPLE_RATE"
MAX_SAMPLE_RATE = "WAVEFLOW_MAX_SAMPLE_RATE"
MAX_CHANNELS = "WAVEFLOW_MAX_CHANNELS"
MAX_WAVEFORM_VALUES = "WAVEFLOW_MAX_WAVEFORM_VALUES"
WEBHOOK_TIMEOUT_SECONDS = "WAVEFLOW_WEBHOOK_TIMEOUT_SECONDS"
WEBHOOK_BUDGET_SECONDS = "WAVEFLOW_WEBHOOK_BUDGET_SECONDS"
WEBHOOK_BACKOFF_SECONDS = "WAVEFLOW_WEBHOOK_BACKOFF_SECONDS"
S3_CONNECT_TIMEOUT_SECONDS = "WAVEFLOW_S3_CONNECT_TIMEOUT_SECONDS"
S3_READ_TIMEOUT_SECONDS = "WAVEFLOW_S3_READ_TIMEOUT_SECONDS"
S3_MAX_ATTEMPTS = "WAVEFLOW_S3_MAX_ATTEMPTS"
DETAIL_SAMPLES_PER_PIXEL = "WAVEFLOW_DETAIL_SAMPLES_PER_PIXEL"
DETAIL_BITS = "WAVEFLOW_DETAIL_BITS"
MAX_DETAIL_BYTES = "WAVEFLOW_MAX_DETAIL_BYTES"
#: ``on`` (default) or ``off``: measure integrated loudness, loudness range and true peak.
LOUDNESS = "WAVEFLOW_LOUDNESS"
#: The tuning variables: a runner passes them through unchanged when they are set.
JOB_TUNING = frozenset({
    MAX_FILE_BYTES, MAX_DURATION_SECONDS, MAX_NUM_PEAKS, MIN_SAMPLE_RATE, MAX_SAMPLE_RATE,
    MAX_CHANNELS, MAX_WAVEFORM_VALUES, WEBHOOK_TIMEOUT_SECONDS,
    WEBHOOK_BUDGET_SECONDS, WEBHOOK_BACKOFF_SECONDS, S3_CONNECT_TIMEOUT_SECONDS,
    S3_READ_TIMEOUT_SECONDS, S3_MAX_ATTEMPTS, DETAIL_BITS, MAX_DETAIL_BYTES, LOUDNESS,
})

#: Set only by the runner, per message or per launch: a queue's extra ``env`` cannot replace
#: them.
RESERVED = frozenset({MESSAGE, SUMMARY_FILE, SCRATCH_DIR, WEBHOOK_SECRET})
