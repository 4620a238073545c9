"""The few Kubernetes API calls the operator makes itself, on one aiohttp session.

kopf watches and patches the WaveflowQueues; everything else — creating and reading Jobs,
reading pods' termination messages, reading the webhook Secret, writing the queue's status —
goes through :class:`KubeApi`. Each method is one call listed in
:mod:`waveflow_operator.k8s.permissions` (a test keeps the two in step). Failed calls are counted
in ``waveflow_kubernetes_api_errors_total`` and raised as :class:`KubeApiError`, whose
``retryable`` says whether the caller should try again later (429, 5xx, network) or give up.

Credentials: in a pod, the service account (token re-read on every call, since bound tokens
rotate); elsewhere, the kubeconfig kopf itself would use (``KUBECONFIG`` or ``~/.kube/config``).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import ssl
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp

from waveflow_job import redact
from waveflow_operator.metrics import Metrics

__all__ = ["KubeApi", "KubeApiError"]

log = logging.getLogger(__name__)

_SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
_RETRYABLE = frozenset({408, 429, 500, 502, 503, 504})
_MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}


class KubeApiError(Exception):
    """An API call failed; ``status`` 0 means it never got an answer."""

    def __init__(self, operation: str, status: int, message: str) -> None:
        super().__init__(f"{operation}: HTTP {status}: {message}" if status else
                         f"{operation}: {message}")
        self.operation = operation
        self.status = status
        self.retryable = status == 0 or status in _RETRYABLE


class KubeApi:
    """A thin async client: JSON in, JSON out, errors counted by operation."""

    def __init__(self, server: str, *, metrics: Metrics | None = None,
                 token_file: Path | None = None, token: str | None = None,
                 ssl_context: ssl.SSLContext | bool = True, timeout: float = 30.0) -> None:
        self.server = server.rstrip("/")
        self.metrics = metrics or Metrics()
        self._token_file = token_file
        self._token = token
        self._ssl = ssl_context
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_environment(cls, metrics: Metrics | None = None, *,
                         timeout: float = 30.0) -> KubeApi:
        """In-cluster service account if there is one, else the kubeconfig."""
        host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get(
            "KUBERNETES_SERVICE_PORT", "443")
        if host and (_SERVICE_ACCOUNT / "token").exists():
            context = ssl.create_default_context(cafile=str(_SERVICE_ACCOUNT / "ca.crt"))
            server = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
            return cls(server, metrics=metrics, token_file=_SERVICE_ACCOUNT / "token",
                       ssl_context=context, timeout=timeout)
        import kopf

        info = kopf.login_with_kubeconfig(settings=kopf.OperatorSettings(), logger=log)
        if info is None:
            raise RuntimeError("no Kubernetes credentials: neither in a pod nor a kubeconfig")
        return cls(info.server, metrics=metrics, token=info.token,
                   ssl_context=_ssl_from(info), timeout=timeout)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ------------------------------------------------------------------ calls

    async def version(self) -> dict[str, Any]:
        """The API server's ``/version`` (``waveflow health``; needs no permission)."""
        return await self._call("version", "GET", "/version") or {}

    async def create_job(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any] | None:
        """Create a Job; None when one of that name exists already (409)."""
        url = f"/apis/batch/v1/namespaces/{namespace}/jobs"
        return await self._call("create_job", "POST", url, body=body, absent_on=(409,))

    async def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._call("get_job", "GET",
                                f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}")

    async def create_config_map(self, namespace: str,
                                body: Mapping[str, Any]) -> dict[str, Any] | None:
        """Create a ConfigMap (a large message body, a settling note); None when it exists
        already (409)."""
        return await self._call("create_config_map", "POST",
                                f"/api/v1/namespaces/{namespace}/configmaps", body=body,
                                absent_on=(409,))

    async def get_config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._call("get_config_map", "GET",
                                f"/api/v1/namespaces/{namespace}/configmaps/{name}")

    async def patch_config_map(self, namespace: str, name: str,
                               patch: Mapping[str, Any]) -> dict[str, Any] | None:
        """A JSON merge patch (a null value removes a key); None when it does not exist."""
        return await self._call("patch_config_map", "PATCH",
                                f"/api/v1/namespaces/{namespace}/configmaps/{name}",
                                body=patch, headers=_MERGE_PATCH)

    async def list_jobs(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        result = await self._call("list_jobs", "GET", f"/apis/batch/v1/namespaces/{namespace}/jobs",
                                  params={"labelSelector": selector})
        return list((result or {}).get("items") or [])

    async def annotate_job(self, namespace: str, name: str,
                           annotations: Mapping[str, str]) -> None:
        await self._call("patch_job", "PATCH",
                         f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}",
                         body={"metadata": {"annotations": dict(annotations)}},
                         headers=_MERGE_PATCH)

    async def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        result = await self._call("list_pods", "GET", f"/api/v1/namespaces/{namespace}/pods",
                                  params={"labelSelector": selector})
        return list((result or {}).get("items") or [])

    async def read_secret_key(self, namespace: str, name: str, key: str) -> str | None:
        """One key of a Secret, decoded; None when the Secret or the key is missing."""
        secret = await self._call("get_secret", "GET",
                                  f"/api/v1/namespaces/{namespace}/secrets/{name}")
        encoded = ((secret or {}).get("data") or {}).get(key)
        if encoded is None:
            value = (secret or {}).get("stringData", {}).get(key)
        else:
            value = base64.b64decode(encoded).decode("utf-8")
        redact.register(value)  # from now on no log line shows it, at any level
        return value

    async def patch_queue_status(self, namespace: str, name: str,
                                 status: Mapping[str, Any]) -> None:
        await self._call(
            "patch_queue_status", "PATCH",
            f"/apis/waveflow.io/v1alpha1/namespaces/{namespace}/waveflowqueues/{name}/status",
            body={"status": dict(status)}, headers=_MERGE_PATCH)

    # ------------------------------------------------------------------ plumbing

    async def _call(self, operation: str, method: str, path: str, *,
                    body: Mapping[str, Any] | None = None,
                    params: Mapping[str, str] | None = None,
                    headers: Mapping[str, str] | None = None,
                    absent_on: tuple[int, ...] = ()) -> dict[str, Any] | None:
        """One request. 404 (and ``absent_on``) → None; other failures → KubeApiError."""
        session = self._session_now()
        request_headers = {"Accept": "application/json", **(headers or {})}
        if body is not None and "Content-Type" not in request_headers:
            request_headers["Content-Type"] = "application/json"
        token = self._current_token()
        if token:
            request_headers["Authorization"] = f"Bearer {token}"
        data = json.dumps(body) if body is not None else None
        try:
            async with session.request(method, self.server + path, data=data, params=params,
                                       headers=request_headers, ssl=self._ssl) as response:
                text = await response.text()
                if response.status < 300:
                    return json.loads(text) if text else {}
                if response.status == 404 or response.status in absent_on:
                    return None
                error = KubeApiError(operation, response.status, _reason(text))
        except (TimeoutError, aiohttp.ClientError, json.JSONDecodeError) as exc:
            error = KubeApiError(operation, 0, f"{type(exc).__name__}: {exc}")
        self.metrics.kubernetes_api_errors.labels(operation=operation).inc()
        raise error

    def _session_now(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    def _current_token(self) -> str | None:
        if self._token_file is not None:
            try:
                return self._token_file.read_text().strip()
            except OSError as exc:
                log.warning("cannot read the service account token: %s", exc)
        return self._token


def _reason(text: str) -> str:
    """The Status message of an error answer, or the start of its body."""
    try:
        document = json.loads(text)
    except ValueError:
        return text[:300]
    if isinstance(document, dict):
        return str(document.get("message") or document.get("reason") or text[:300])
    return text[:300]


def _ssl_from(info: Any) -> ssl.SSLContext | bool:
    """An SSL context from kopf's ConnectionInfo (CA, client certificate), or True/False."""
    if getattr(info, "insecure", False):
        return False
    if not str(info.server).startswith("https"):
        return True
    context = ssl.create_default_context()
    if info.ca_path:
        context.load_verify_locations(cafile=os.fsdecode(info.ca_path))
    elif info.ca_data:
        context.load_verify_locations(cadata=_text(info.ca_data))
    cert, key = info.certificate_path, info.private_key_path
    if not cert and info.certificate_data:
        cert = _to_file(info.certificate_data)
    if not key and info.private_key_data:
        key = _to_file(info.private_key_data)
    if cert:
        context.load_cert_chain(certfile=os.fsdecode(cert),
                                keyfile=os.fsdecode(key) if key else None)
    return context


def _text(data: bytes | str) -> str:
    return data.decode("ascii") if isinstance(data, bytes) else data


def _to_file(data: bytes | str) -> str:
    """ssl only loads client certificates from files."""
    handle, path = tempfile.mkstemp(prefix="waveflow-kube-", suffix=".pem")
    with os.fdopen(handle, "wb") as file:
        file.write(data if isinstance(data, bytes) else data.encode("ascii"))
    return path
