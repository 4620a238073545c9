"""Exactly the Kubernetes API calls the operator makes: (apiGroup, resource, verbs).

The chart's Role is compared with this list (tests/chart), and the operator's tests derive the
calls they observe against the emulator from it, so it stays truthful in both directions.
Everything is namespaced: the operator needs no ClusterRole.
"""

from __future__ import annotations

__all__ = ["PERMISSIONS"]

PERMISSIONS: list[tuple[str, str, frozenset[str]]] = [
    # One Job per message: created, read back on adoption (409), listed by label at start,
    # annotated (patch, metadata.annotations only) once reported and once its message is
    # dead-lettered, so a restarted operator never dead-letters a message twice; kopf lists
    # and watches them for status (on.event).
    ("batch", "jobs", frozenset({"create", "get", "list", "watch", "patch"})),
    # A message body too large for the environment: a ConfigMap owned by its Job (garbage-
    # collected with it), read back on a 409 to check it belongs to that very Job. The queue's
    # settling notes of invalid messages (k8s/notes.py): created on first use, read at start,
    # an entry patched in once a message is dead-lettered and patched out with its message.
    ("", "configmaps", frozenset({"create", "get", "patch"})),
    # The job's one-line summary is the pod's termination message.
    ("", "pods", frozenset({"list"})),
    # The webhook signing key, for the FAILURE completions the operator sends itself.
    ("", "secrets", frozenset({"get"})),
    # kopf posts warnings about the queues it serves as Kubernetes events.
    ("", "events", frozenset({"create"})),
    # kopf lists and watches the queues, and patches its finalizer and annotations on them.
    ("waveflow.io", "waveflowqueues", frozenset({"list", "watch", "patch"})),
    # The operator writes each queue's status (conditions, counts, last poll, last error).
    ("waveflow.io", "waveflowqueues/status", frozenset({"patch"})),
]
