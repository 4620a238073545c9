"""The ONE place a job's environment is built, for both launchers (CONTRACT.md §4).

The local launcher adds ``TMPDIR`` and ``WAVEFLOW_SUMMARY_FILE`` of its own per process; the
Kubernetes Job builder sets ``TMPDIR=/scratch``, the summary file to the termination-message
path, and takes ``WEBHOOK_SECRET`` from a Secret (``include_secret=False``).
"""

from __future__ import annotations

from waveflow_operator.config import QueueSettings
from waveflow_operator.dispatcher import Delivery

__all__ = ["SECRET_VARIABLE", "job_env"]

#: The one variable that must come from a Secret in Kubernetes, never inline in the Job.
SECRET_VARIABLE = "WEBHOOK_SECRET"


def job_env(delivery: Delivery, settings: QueueSettings, *,
            include_secret: bool = True) -> dict[str, str]:
    """Every variable ``waveflow-job run`` reads for this message, as plain strings.

    Unset optional settings are left out rather than set empty. The order is stable (a
    dict), so the Job builder's output is deterministic.
    """
    env: dict[str, str] = {
        "WAVEFLOW_MESSAGE": delivery.body,
        "WAVEFLOW_SQS_MESSAGE_ID": delivery.sqs_message_id,
        "WAVEFLOW_JOB_NAME": delivery.job_name,
        "WAVEFLOW_QUEUE": delivery.queue,
        "S3_BUCKET_NAME": settings.bucket,
        "SQS_QUEUE_URL": settings.queue_url,
        "WEBHOOK_URL": settings.webhook_url,
        "LOG_LEVEL": settings.log_level,
    }
    if settings.region:
        env["AWS_REGION"] = settings.region
        env["AWS_DEFAULT_REGION"] = settings.region
    if settings.endpoint_url:
        env["AWS_ENDPOINT_URL"] = settings.endpoint_url
    if settings.upload_prefixes:
        env["UPLOAD_PREFIXES"] = ",".join(settings.upload_prefixes)
    for key, value in settings.job_env.items():
        env.setdefault(key, value)
    if include_secret and settings.webhook_secret:
        env[SECRET_VARIABLE] = settings.webhook_secret
    return env
