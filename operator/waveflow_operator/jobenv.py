"""The ONE place a job's environment is built, for both launchers (CONTRACT.md §4).

The local launcher adds ``TMPDIR`` and ``WAVEFLOW_SUMMARY_FILE`` of its own per process; the
Kubernetes Job builder sets ``TMPDIR=/scratch``, the summary file to the termination-message
path, and takes ``WEBHOOK_SECRET`` from a Secret (``include_secret=False``).
"""

from __future__ import annotations

from waveflow_job.contract import env as names
from waveflow_operator.config import QueueSettings
from waveflow_operator.dispatcher import Delivery

__all__ = ["SECRET_VARIABLE", "job_env"]

#: The one variable that must come from a Secret in Kubernetes, never inline in the Job.
SECRET_VARIABLE = names.WEBHOOK_SECRET


def job_env(delivery: Delivery, settings: QueueSettings, *,
            include_secret: bool = True) -> dict[str, str]:
    """Every variable ``waveflow-job run`` reads for this message, as plain strings.

    Unset optional settings are left out rather than set empty. The order is stable (a
    dict), so the Job builder's output is deterministic.
    """
    env: dict[str, str] = {
        names.MESSAGE: delivery.body,
        names.BUCKET: settings.bucket,
        names.QUEUE_URL: settings.queue_url,
        names.WEBHOOK_URL: settings.webhook_url,
        names.LOG_LEVEL: settings.log_level,
    }
    if settings.region:
        env[names.REGION] = settings.region
        env[names.REGION_FALLBACK] = settings.region
    if settings.endpoint_url:
        env[names.ENDPOINT_URL] = settings.endpoint_url
    if settings.upload_prefixes:
        env[names.UPLOAD_PREFIXES] = ",".join(settings.upload_prefixes)
    for key, value in settings.job_env.items():
        env.setdefault(key, value)
    if include_secret and settings.webhook_secret:
        env[SECRET_VARIABLE] = settings.webhook_secret
    return env
