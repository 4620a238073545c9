"""The kopf wiring, thin: every handler is a few lines calling plain modules.

- one ``@kopf.daemon`` per WaveflowQueue runs its dispatcher (:mod:`.runtime`); kopf stops
  it when the resource is deleted or the operator exits;
- Job status reaches the launchers through ``@kopf.on.event`` on ``batch/v1`` Jobs labelled
  ``app.kubernetes.io/managed-by: waveflow-operator`` (not ``on.update``: kopf leaves status out
  of its diffs);
- ``@kopf.on.startup`` sets kopf's settings and puts the shared clients in ``memo``;
  ``@kopf.on.cleanup`` closes them; ``@kopf.on.probe`` feeds kopf's liveness endpoint.

**Replicas: one, with ``--standalone``, Deployment strategy ``Recreate``.** The dispatcher holds
each in-flight message's receipt handle and heartbeat in memory, so exactly one process may serve
a queue at a time. kopf peering would keep a second replica paused, but it needs the
KopfPeering CRDs and cluster-wide RBAC, and pauses *all* replicas when two have the same
priority. Nothing is lost while the single replica restarts: Jobs keep running in the cluster,
their messages stay invisible until their visibility timeout (a clean stop returns them at
once), and the new process lists its Jobs by label, adopts them when the messages come back
(a Job name is derived from the SQS MessageId) and settles each exactly once. ``Recreate``
(not ``RollingUpdate``) keeps an upgrade from running two replicas side by side.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from waveflow_operator.k8s.api import KubeApi
from waveflow_operator.k8s.jobs import LABEL_MANAGED_BY, LABEL_QUEUE, MANAGED_BY
from waveflow_operator.k8s.runtime import NotReady, OperatorRuntime, serve_queue
from waveflow_operator.metrics import Metrics, serve

__all__ = ["run_operator"]

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = "waveflow.io", "v1alpha1", "waveflowqueues"


def configure(settings: kopf.OperatorSettings) -> None:
    """kopf's settings, in one place."""
    settings.peering.standalone = True
    # Warnings and errors about a queue become Kubernetes events (`kubectl describe wfq`).
    settings.posting.loggers = True
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300  # reconnect watches every few minutes
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    settings.persistence.finalizer = "waveflow.io/finalizer"
    # Annotations, not status.kopf: the WaveflowQueue's status schema is strict.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="waveflow.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="waveflow.io", key="last-handled-configuration")
    settings.background.instant_exit_timeout = 0.5
    # No namespace or CRD scanning: a namespaced Role cannot list namespaces, and the CRD is
    # installed with the chart before the operator starts.
    settings.scanning.disabled = True


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    configure(settings)
    metrics = memo.get("metrics") or Metrics()
    memo["runtime"] = OperatorRuntime(KubeApi.from_environment(metrics), metrics)


@kopf.daemon(GROUP, VERSION, PLURAL, cancellation_polling=1.0)
async def queue_daemon(meta: kopf.Meta, body: kopf.Body, memo: kopf.Memo,
                       stopped: kopf.DaemonStopped, **_: Any) -> None:
    try:
        await serve_queue(memo["runtime"], meta, body, stopped)
    except NotReady as error:
        raise kopf.TemporaryError(str(error), delay=error.delay) from error


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_MANAGED_BY: MANAGED_BY})
async def job_event(type: str | None, body: kopf.Body, namespace: str | None,
                    labels: kopf.Labels, memo: kopf.Memo, **_: Any) -> None:
    memo["runtime"].job_event(namespace or "", labels.get(LABEL_QUEUE), body, type)


@kopf.on.probe(id="queues")
def queues_alive(memo: kopf.Memo, **_: Any) -> dict[str, str]:
    return dict(memo["runtime"].liveness()) if "runtime" in memo else {}


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    if "runtime" in memo:
        await memo["runtime"].close()


def run_operator(namespaces: list[str] | None = None, all_namespaces: bool = False,
                 liveness: str | None = None, metrics_port: int = 9090,
                 listen_address: str = "0.0.0.0",
                 standalone: bool = True) -> int:
    """``waveflow operator``: metrics server, then kopf until SIGTERM.

    Always standalone (one replica, see the module docstring); ``standalone`` is accepted for
    the CLI's ``--standalone`` flag and only changes what is logged.
    """
    metrics = Metrics()
    server = serve(metrics, metrics_port, host=listen_address) if metrics_port else None
    if not standalone:
        log.info("running standalone: WaveFlow runs one operator replica without kopf peering")
    try:
        kopf.run(clusterwide=all_namespaces or not namespaces,
                 namespaces=[] if all_namespaces else list(namespaces or []),
                 liveness_endpoint=liveness, standalone=True,
                 memo=kopf.Memo(metrics=metrics))
    finally:
        if server is not None:
            server.shutdown()
    return 0
