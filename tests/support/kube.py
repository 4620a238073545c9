"""A Kubernetes API on loopback for kopf: kmock 0.8's emulator plus what a real API server does.

kmock's ``KubernetesEmulator`` keeps objects in memory and streams watch events. Measured gaps
that stall or confuse kopf, filled in here:

- no ``resourceVersion``/``uid``/``creationTimestamp``: kopf's finalizer JSON-patch tests
  ``/metadata/resourceVersion`` and gets a 500 → every write now gets a fresh revision, and a
  failed ``test`` op is a 422 Conflict-like answer, as kopf expects;
- ``labelSelector`` ignored → honoured on lists and watches (``k=v``, ``k!=v``, ``k``, ``!k``);
- watches replay every object on reconnect and may miss a write made while they start → a watch
  marks its place on the event bus before listing, and skips objects at or below the
  ``resourceVersion`` it was given;
- creates answer 200 → 201; ``generateName`` is honoured (kopf posts its events with it);
- ``/version/``, ``/api/``, ``/apis/`` with a trailing slash answer like without it;
- deleting an object with finalizers bumps its revision; deleting an owner deletes the objects
  whose ownerReferences name its uid (background garbage collection);
- speed: kmock matches every request against its whole request history and finds objects by
  scanning them all (quadratic over a test); answered requests are forgotten here (the API
  calls are recorded for the permissions test instead) and objects are looked up by key.

Faults a test injects (only into the operator's requests; the test's and the kubelet's pass):
``faults`` answer an error instead of serving a request (``KubeFault``); ``partitioned`` makes
the operator's watches of a resource drop every event (a silent partition); ``expire_watches``
sends them ``ERROR`` 410 and refuses a later resume from before that point, as etcd compaction
does; ``drop_watches`` ends them without an error (a timeout: the client resumes). ``calls``
counts the operator's requests by resource and verb.

Still not emulated: PUT, server-side defaults and validation, ``/api/v1/namespaces`` listing
(run kopf cluster-wide), watch ``timeoutSeconds``.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import re
import secrets
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp.web
import attrs
import jsonpatch
import kmock
import yaml
from kmock import KubernetesEmulator, Request, ResourceInfo, action, resource

JOBS = resource("batch", "v1", "jobs")
PODS = resource("", "v1", "pods")
EVENTS = resource("", "v1", "events")
SECRETS = resource("", "v1", "secrets")
CONFIGMAPS = resource("", "v1", "configmaps")
QUEUES = resource("waveflow.io", "v1alpha1", "waveflowqueues")
NAMESPACES = resource("", "v1", "namespaces")
CRDS = resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")

#: What the emulator serves in discovery: (resource, kind, subresources).
_RESOURCES: tuple[tuple[resource, str, tuple[str, ...]], ...] = (
    (JOBS, "Job", ("status",)),
    (PODS, "Pod", ("status",)),
    (EVENTS, "Event", ()),
    (SECRETS, "Secret", ()),
    (CONFIGMAPS, "ConfigMap", ()),
    (QUEUES, "WaveflowQueue", ("status",)),
)
#: Cluster-scoped ones kopf waits for in discovery before it starts any watch.
_CLUSTER_RESOURCES: tuple[tuple[resource, str], ...] = (
    (NAMESPACES, "Namespace"),
    (CRDS, "CustomResourceDefinition"),
)
_VERBS = {"create", "delete", "get", "list", "patch", "watch"}
#: Bus markers the watches act on (never sent to a client): see ``expire_watches``.
_EXPIRED, _DROPPED = "waveflow-test:expired", "waveflow-test:dropped"
_WRITES = {action.CREATE, action.UPDATE, action.DELETE}
_VERBS_BY_ACTION = {action.LIST: "list", action.WATCH: "watch", action.FETCH: "get",
                    action.CREATE: "create", action.UPDATE: "patch", action.DELETE: "delete"}


def _unprocessable(message: str) -> kmock.KubernetesError:
    return kmock.KubernetesError(status=422, reason="Invalid", message=message)


@dataclass
class KubeFault:
    """Answer ``status`` instead of serving a request ``when`` matches (``times``; None: ever).
    Only the operator's requests are matched: the test's and the kubelet's pass."""

    when: Callable[[Request], bool]
    status: int = 503
    reason: str = "ServiceUnavailable"
    times: int | None = 1
    fired: int = 0

    def fires(self, request: Request) -> bool:
        if request.headers.get("User-Agent", "").startswith("kmock/"):
            return False
        if (self.times is not None and self.fired >= self.times) or not self.when(request):
            return False
        self.fired += 1
        return True


@attrs.define(kw_only=True)
class KubeEmulator(KubernetesEmulator):
    """kmock's emulator with revisions, selectors, honest watches, 201s and owner GC."""

    _revisions: Any = attrs.field(factory=lambda: itertools.count(1), init=False)
    _revision: int = attrs.field(default=0, init=False)
    _write_lock: asyncio.Lock = attrs.field(factory=asyncio.Lock, init=False)
    _calls: set[tuple[str, str, str]] = attrs.field(factory=set, init=False)
    #: (resource[/subresource], verb) → how many of the operator's requests asked for it.
    calls: Counter[tuple[str, str]] = attrs.field(factory=Counter, init=False)
    #: Errors to answer instead of serving (tests/reliability/test_operator_faults.py).
    faults: list[KubeFault] = attrs.field(factory=list, init=False)
    #: (resource plural, name) → successful creates, deleted objects' included.
    creates: Counter[tuple[str, str]] = attrs.field(factory=Counter, init=False)
    #: Resources whose operator watches drop every event (a silent network partition).
    partitioned: set[resource] = attrs.field(factory=set, init=False)
    #: Resource → the revision below which a watch is answered ``410 Gone`` (compaction).
    compacted: dict[resource, int] = attrs.field(factory=dict, init=False)
    #: ``ERROR`` events with code 410 sent to the operator's watches.
    gone_sent: int = attrs.field(default=0, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.fallback["get /version/"] << self._serve_server_version
        self.fallback["get /apis/"] << self._serve_apis
        self.fallback["get /api/"] << self._serve_api
        for res, kind, subresources in _RESOURCES:
            self.resources[res] = ResourceInfo(kind=kind, namespaced=True, verbs=_VERBS,
                                               subresources=subresources)
        for res, kind in _CLUSTER_RESOURCES:
            self.resources[res] = ResourceInfo(kind=kind, namespaced=False, verbs=_VERBS)

    # ------------------------------------------------------------------ test-side helpers

    def stored(self, res: resource, namespace: str, name: str) -> dict[str, Any] | None:
        """The current object, or None (for assertions; not an API call)."""
        key = (res, namespace, name)
        if key not in self.objects or self.objects[key].deleted:
            return None
        return copy.deepcopy(self.objects[key].raw)

    def stored_all(self, res: resource, namespace: str | None = None) -> list[dict[str, Any]]:
        """Every live object of a resource, oldest first (for assertions)."""
        return [copy.deepcopy(obj.raw) for (r, ns, _), obj in self.objects.items()
                if r == res and not obj.deleted and (namespace is None or ns == namespace)]

    def ever_created(self, res: resource) -> list[str]:
        """Names of every object of a resource ever stored, deleted ones included."""
        return [name for (r, _, name) in self.objects if r == res]

    def api_calls(self) -> set[tuple[str, str, str]]:
        """(apiGroup, resource[/subresource], verb) of every API request not made by the test
        itself (the test's and the kubelet's client identifies as kmock)."""
        return set(self._calls)

    def _record(self, request: Request) -> None:
        agent = request.headers.get("User-Agent", "")
        if request.resource is None or request.resource.plural is None \
                or agent.startswith("kmock/"):
            return
        plural = str(request.resource.plural)
        if request.subresource:
            plural += f"/{request.subresource}"
        verb = _VERBS_BY_ACTION.get(request.action) if request.action else None
        self._calls.add((str(request.resource.group), plural, verb or str(request.method)))
        self.calls[(plural, verb or str(request.method))] += 1

    # ------------------------------------------------------------------ watch faults

    async def expire_watches(self, res: resource) -> None:
        """What etcd compaction does to a watch: every operator watch of ``res`` now open gets
        an ``ERROR`` event with code 410 ("too old resource version") and ends, and so does a
        later one that asks to resume from a revision before now."""
        self.compacted[res] = self._revision
        await self._buses[res].put({"type": _EXPIRED})

    async def drop_watches(self, res: resource) -> None:
        """End every operator watch of ``res`` now open, without an error (a server-side
        timeout or a dropped connection): the client resumes from its last revision."""
        await self._buses[res].put({"type": _DROPPED})

    def _gone(self, request: Request) -> dict[str, Any]:
        self.gone_sent += 1
        since = request.params.get("resourceVersion")
        return {"type": "ERROR", "object": {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": f"too old resource version: {since} "
                       f"({self.compacted.get(request.resource, 0)})",
            "reason": "Expired", "code": 410}}

    # ------------------------------------------------------------------ writes

    def _next_revision(self) -> str:
        self._revision = next(self._revisions)
        return str(self._revision)

    async def _handle(self, request: Request) -> aiohttp.web.StreamResponse:
        self._record(request)
        try:
            for fault in self.faults:
                if fault.fires(request):
                    return await self._render_error(kmock.KubernetesError(
                        status=fault.status, reason=fault.reason, message="injected"))
            response = await self._handle_recorded(request)
            if request.action == action.CREATE and response.status == 201 \
                    and request.resource is not None and isinstance(request.data, dict):
                name = str((request.data.get("metadata") or {}).get("name"))
                self.creates[(str(request.resource.plural), name)] += 1
            return response
        finally:
            # kmock matches each request by scanning its whole request history (quadratic in
            # the number of requests served): forget a request once it is answered; the API
            # calls themselves are recorded above.
            for index in range(len(self._requests) - 1, -1, -1):
                if self._requests[index] is request:
                    del self._requests[index]
                    break

    async def _handle_recorded(self, request: Request) -> aiohttp.web.StreamResponse:
        if request.resource is None or request.action not in _WRITES:
            return await super()._handle(request)
        async with self._write_lock:
            self._prepare_write(request)
            before = self._uid_of(request)
            response = await self._mark_deleted(request) or await super()._handle(request)
            if request.action == action.CREATE and response.status == 200:
                response.set_status(201)
            if before is not None and self._uid_of(request) is None:
                await self._collect_garbage(before)
            return response

    def _key(self, request: Request) -> tuple[Any, str | None, str | None]:
        return (request.resource, request.namespace, request.name)

    def _current(self, request: Request) -> dict[str, Any] | None:
        key = self._key(request)
        if key not in self.objects or self.objects[key].deleted:
            return None
        return self.objects[key].raw

    def _uid_of(self, request: Request) -> str | None:
        if request.action == action.CREATE:
            return None
        current = self._current(request)
        return None if current is None else current.get("metadata", {}).get("uid")

    def _prepare_write(self, request: Request) -> None:
        if request.action == action.CREATE:
            self._prepare_create(request)
            return
        if self._current(request) is None:
            raise kmock.KubernetesObjectNotFoundError()
        if request.action == action.UPDATE:
            self._prepare_patch(request, self._current(request) or {})

    async def _mark_deleted(self, request: Request) -> aiohttp.web.StreamResponse | None:
        """DELETE of an object with finalizers: set deletionTimestamp with a new revision."""
        current = self._current(request)
        meta = (current or {}).get("metadata", {})
        if request.action != action.DELETE or not meta.get("finalizers"):
            return None
        if not meta.get("deletionTimestamp"):
            stamp = {"deletionTimestamp": _now(), "resourceVersion": self._next_revision()}
            async with self._lock:
                obj = self.objects[self._key(request)]
                obj.patch({"metadata": stamp})
                current = obj.raw
                await self._buses[request.resource].put({"type": "MODIFIED", "object": current})
        return aiohttp.web.json_response(current)

    def _prepare_create(self, request: Request) -> None:
        data = request.data
        if not isinstance(data, dict):
            raise _unprocessable("the body must be a JSON object")
        meta = data.setdefault("metadata", {})
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise _unprocessable("metadata.name or metadata.generateName is required")
            meta["name"] = meta["generateName"] + secrets.token_hex(3)[:5]
        if request.namespace and not meta.get("namespace"):
            meta["namespace"] = request.namespace
        key = (request.resource, meta.get("namespace"), meta["name"])
        if key in self.objects and not self.objects[key].deleted:
            raise kmock.KubernetesError(status=409, reason="AlreadyExists",
                                        message=f"{meta['name']!r} already exists")
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1,
                    resourceVersion=self._next_revision())

    def _prepare_patch(self, request: Request, current: dict[str, Any]) -> None:
        revision_op = {"op": "add", "path": "/metadata/resourceVersion"}
        if isinstance(request.data, list):
            try:
                jsonpatch.apply_patch(current, request.data, in_place=False)
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
                raise _unprocessable(f"the JSON patch does not apply: {exc}") from None
            request.data.append({**revision_op, "value": self._next_revision()})
        elif isinstance(request.data, dict):
            request.data.setdefault("metadata", {})
            if request.data["metadata"] is None:
                request.data["metadata"] = {}
            request.data["metadata"]["resourceVersion"] = self._next_revision()
        else:
            raise _unprocessable("the patch must be a JSON object or a JSON-patch list")

    async def _collect_garbage(self, owner_uid: str) -> None:
        """Background deletion of dependents (no finalizers on them: they go at once)."""
        def owned(obj: Any) -> bool:
            refs = obj.get("metadata", {}).get("ownerReferences", [])
            return any(ref.get("uid") == owner_uid for ref in refs)

        doomed = [(key, obj) for key, obj in self.objects.items()
                  if not obj.deleted and owned(obj)]
        async with self._lock:
            for (res, _, _), obj in doomed:
                raw = obj.raw
                obj.delete()
                await self._buses[res].put({"type": "DELETED", "object": raw})
        for _, obj in doomed:
            uid = obj.last.get("metadata", {}).get("uid")
            if uid:
                await self._collect_garbage(uid)

    # ------------------------------------------------------------------ reads

    # kmock finds the object of every fetch/create/patch/delete by scanning all objects; with
    # thousands of Jobs and Pods that dominated a benchmark. These look it up by its key.

    def _stored_at(self, request: Request, name: str | None = None,
                   namespace: str | None = None) -> Any:
        key = (request.resource, request.namespace or namespace, request.name or name)
        try:
            return self.objects[key]
        except KeyError:
            return None

    async def _serve_fetch(self, request: Request) -> Any:
        obj = self._stored_at(request)
        if obj is None or obj.deleted:
            raise kmock.KubernetesObjectNotFoundError()
        return obj.raw

    async def _serve_create(self, request: Request) -> Any:
        meta = (request.data or {}).get("metadata") or {}
        return self._stored_at(request, meta.get("name"), meta.get("namespace")).last.raw

    async def _serve_update(self, request: Request) -> Any:
        return self._stored_at(request).last.raw

    async def _serve_delete(self, request: Request) -> Any:
        return self._stored_at(request).last.raw

    async def _serve_list(self, request: Request) -> Any:
        if request.resource not in self._get_resources():
            raise kmock.KubernetesResourceNotFoundError()
        selector = LabelSelector.parse(request.params.get("labelSelector"))
        async with self._lock:
            items = [obj.raw for (res, ns, _), obj in self.objects.items()
                     if res == request.resource and not obj.deleted
                     and (request.namespace is None or ns == request.namespace)]
        return {"apiVersion": "v1", "kind": "List",
                "metadata": {"resourceVersion": str(self._revision)},
                "items": [item for item in items if selector.matches(item)]}

    async def _serve_watch(self, request: Request) -> AsyncIterator[Any]:
        assert request.resource is not None
        selector = LabelSelector.parse(request.params.get("labelSelector"))
        since = _revision_of(request.params.get("resourceVersion"))
        bus = self._buses[request.resource]
        operators = not request.headers.get("User-Agent", "").startswith("kmock/")
        mark = await bus.mark()
        try:
            yield b""
            if operators and 0 < since < self.compacted.get(request.resource, 0):
                yield self._gone(request)
                return
            async with self._lock:
                snapshot = [obj.raw for (res, ns, _), obj in self.objects.items()
                            if res == request.resource and not obj.deleted
                            and (request.namespace is None or ns == request.namespace)]
            for raw in snapshot:
                if operators and request.resource in self.partitioned:
                    break
                if selector.matches(raw) and _revision_of(raw) > since:
                    yield {"type": "ADDED", "object": raw}
            async for event in bus.stream(since=mark):
                if event.get("type") in (_EXPIRED, _DROPPED):
                    if not operators:
                        continue
                    if event["type"] == _EXPIRED:
                        yield self._gone(request)
                    return
                if operators and request.resource in self.partitioned:
                    continue
                raw = event.get("object", {})
                meta = raw.get("metadata", {})
                if request.namespace is not None and meta.get("namespace") != request.namespace:
                    continue
                if request.name is not None and meta.get("name") != request.name:
                    continue
                if not selector.matches(raw):
                    continue
                if event.get("type") != "DELETED" and _revision_of(raw) <= since:
                    continue
                yield event
        finally:
            await bus.unmark(mark)


@dataclass(frozen=True)
class LabelSelector:
    """The equality-based label selectors kopf and WaveFlow send (no set-based ``in``)."""

    equal: tuple[tuple[str, str], ...] = ()
    unequal: tuple[tuple[str, str], ...] = ()
    present: tuple[str, ...] = ()
    absent: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> LabelSelector:
        equal, unequal, present, absent = [], [], [], []
        for term in filter(None, (t.strip() for t in (text or "").split(","))):
            if "!=" in term:
                key, value = term.split("!=", 1)
                unequal.append((key.strip(), value.strip()))
            elif "=" in term:
                key, value = re.split(r"==?", term, maxsplit=1)
                equal.append((key.strip(), value.strip()))
            elif term.startswith("!"):
                absent.append(term[1:].strip())
            else:
                present.append(term)
        return cls(tuple(equal), tuple(unequal), tuple(present), tuple(absent))

    def matches(self, obj: Mapping[str, Any]) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return (all(labels.get(k) == v for k, v in self.equal)
                and all(labels.get(k) != v for k, v in self.unequal)
                and all(k in labels for k in self.present)
                and all(k not in labels for k in self.absent))


def _revision_of(value: Any) -> int:
    if isinstance(value, Mapping):
        value = (value.get("metadata") or {}).get("resourceVersion")
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------------- running it


@dataclass
class RunningKube:
    """A started emulator, its URL and a kubeconfig file pointing at it."""

    emulator: KubeEmulator
    url: str
    kubeconfig: Path

    def env(self) -> dict[str, str]:
        """What a process needs to reach this API: KUBECONFIG."""
        return {"KUBECONFIG": str(self.kubeconfig)}

    async def create(self, res: resource, body: dict[str, Any]) -> dict[str, Any]:
        """Create through the HTTP API, so watchers see it."""
        namespace = body["metadata"]["namespace"]
        async with self.emulator.post(_collection(res, namespace), json=body) as response:
            if response.status >= 300:
                raise AssertionError(f"create failed: {response.status} {await response.text()}")
            result: dict[str, Any] = await response.json()
            return result

    async def delete(self, res: resource, namespace: str, name: str) -> None:
        async with self.emulator.delete(f"{_collection(res, namespace)}/{name}") as response:
            if response.status >= 300 and response.status != 404:
                raise AssertionError(f"delete failed: {response.status} {await response.text()}")

    async def patch(self, res: resource, namespace: str, name: str, patch: dict[str, Any],
                    *, subresource: str = "") -> dict[str, Any]:
        url = f"{_collection(res, namespace)}/{name}" + (f"/{subresource}" if subresource else "")
        headers = {"Content-Type": "application/merge-patch+json"}
        async with self.emulator.patch(url, data=json.dumps(patch), headers=headers) as response:
            if response.status >= 300:
                raise AssertionError(f"patch failed: {response.status} {await response.text()}")
            result: dict[str, Any] = await response.json()
            return result


def _collection(res: resource, namespace: str) -> str:
    prefix = f"/apis/{res.group}/{res.version}" if res.group else f"/api/{res.version}"
    return f"{prefix}/namespaces/{namespace}/{res.plural}"


def write_kubeconfig(path: Path, url: str, namespace: str = "default") -> Path:
    """A kubeconfig with no credentials: the emulator accepts anyone on loopback."""
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "emulator",
        "clusters": [{"name": "emulator", "cluster": {"server": url}}],
        "users": [{"name": "tester", "user": {}}],
        "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "tester",
                                                      "namespace": namespace}}],
    }
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@asynccontextmanager
async def running_kube(directory: Path) -> AsyncIterator[RunningKube]:
    """Serve a fresh emulator on a free loopback port for the duration of the block."""
    async with KubeEmulator() as emulator, kmock.Server(emulator) as server:
        url = str(server.url).rstrip("/")
        yield RunningKube(emulator, url, write_kubeconfig(directory / "kubeconfig", url))


def iter_objects(objects: Iterable[Mapping[str, Any]], **labels: str) -> list[Mapping[str, Any]]:
    """Objects carrying every given label (a test-side filter)."""
    return [o for o in objects if all(
        (o.get("metadata", {}).get("labels") or {}).get(k) == v for k, v in labels.items())]
