"""The ONE place a job's environment is built, for both launchers (CONTRACT.md §4).

The local launcher adds ``TMPDIR`` and ``WAVEFLOW_SUMMARY_FILE`` of its own per process; the
Kubernetes Job builder sets ``TMPDIR=/scratch``, the summary file to the termination-message
path, and takes ``WEBHOOK_SECRET`` from a Secret (``include_secret=False``).

The message body is not part of it: one environment string may not exceed 128 KiB (exec fails
with E2BIG), so each launcher hands the body over its own way: a file locally
(``--message-file``), the environment or a mounted ConfigMap on Kubernetes
(:mod:`waveflow_operator.k8s.message`).
"""

from __future__ import annotations

from waveflow_job.contract import env as names
from waveflow_operator.runner.protocol import JobRequest
from waveflow_operator.runner.spec import TUNABLES, QueueSpec

__all__ = ["SECRET_VARIABLE", "job_env"]

#: The one variable that must come from a Secret in Kubernetes, never inline in the Job.
SECRET_VARIABLE = names.WEBHOOK_SECRET


def job_env(request: JobRequest, spec: QueueSpec, *,
            include_secret: bool = True) -> dict[str, str]:
    """Every variable ``waveflow-job run`` reads for this message, as plain strings.

    Unset optional settings are left out rather than set empty. The order is stable (a
    dict), so the Job builder's output is deterministic.
    """
    env: dict[str, str] = {
        names.BUCKET: spec.bucket,
        names.QUEUE_URL: spec.queue_url,
        names.WEBHOOK_URL: spec.webhook_url,
        names.LOG_LEVEL: spec.log_level,
    }
    if spec.region:
        env[names.REGION] = spec.region
        env[names.REGION_FALLBACK] = spec.region
    if spec.endpoint_url:
        env[names.ENDPOINT_URL] = spec.endpoint_url
    if spec.upload_prefixes:
        env[names.UPLOAD_PREFIXES] = ",".join(spec.upload_prefixes)
    for tunable in TUNABLES:  # the job's own settings from the one table, always explicit
        if tunable.job:
            env[tunable.env] = tunable.render(getattr(spec, tunable.attribute))
    for key, value in spec.job_env.items():
        env.setdefault(key, value)
    if include_secret and spec.webhook_secret:
        env[SECRET_VARIABLE] = spec.webhook_secret
    return env
