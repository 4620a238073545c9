"""Test-only kopf login: the emulator's kubeconfig (``KUBECONFIG``), nothing else.

Loaded with ``-m support.kopf_login`` beside ``-m waveflow_operator.k8s.handlers``; defining a login
handler switches off kopf's own ones (which would try pykube and the client library first).
"""

from __future__ import annotations

from typing import Any

import kopf


@kopf.on.login()
def login_to_emulator(**kwargs: Any) -> kopf.ConnectionInfo | None:
    return kopf.login_with_kubeconfig(**kwargs)
