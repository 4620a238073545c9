"""Run the real images: the engine and builds of charts/images/build.py, and a Pod's container
turned into the engine's ``run`` flags.

:func:`run_flags` reads a container and its pod as Kubernetes would and refuses any field it does
not know how to honour, so a new field in the Job builder or the chart breaks the image tests
instead of being silently dropped. What a kubelet would provide is emulated on the host:

- an ``emptyDir`` volume is a fresh host directory of mode 0777 (podman's tmpfs ignores
  ``mode=``, and the image's user must be able to write it), bind-mounted at its mountPath;
- ``terminationMessagePath`` is a host file bind-mounted at that path, read back afterwards;
- ``readOnlyRootFilesystem`` is ``--read-only`` without podman's extra tmpfs mounts on /tmp,
  /var/tmp and /run, so a write anywhere else fails as it would in the cluster.

The container shares the host's network: moto, the webhook recorder and the Kubernetes emulator
listen on loopback.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parents[2]

#: Fields of a container / pod spec and what this emulation does with them.
_CONTAINER_FIELDS = {"name", "image", "imagePullPolicy", "command", "args", "env", "resources",
                     "volumeMounts", "terminationMessagePath", "terminationMessagePolicy",
                     "securityContext", "ports", "livenessProbe", "readinessProbe"}
_POD_FIELDS = {"restartPolicy", "automountServiceAccountToken", "enableServiceLinks",
               "securityContext", "containers", "volumes", "serviceAccountName",
               "terminationGracePeriodSeconds"}
_SECURITY_FIELDS = {"allowPrivilegeEscalation", "readOnlyRootFilesystem", "runAsNonRoot",
                    "runAsUser", "runAsGroup", "capabilities", "seccompProfile", "fsGroup"}


def image_build() -> ModuleType:
    """charts/images/build.py, the same module `make images` runs."""
    spec = importlib.util.spec_from_file_location("waveflow_image_build",
                                                  REPO / "charts" / "images" / "build.py")
    assert spec and spec.loader
    if spec.name in sys.modules:
        return sys.modules[spec.name]
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@dataclass
class PodRun:
    """The flags for one container run, and the host paths standing in for its volumes."""

    flags: list[str]
    command: list[str]
    volumes: dict[str, Path] = field(default_factory=dict)
    termination_message: Path | None = None


def run_flags(pod: Mapping[str, Any], image: str, workdir: Path,
              secrets: Mapping[tuple[str, str], str] | None = None) -> PodRun:
    """Translate the pod's only container into ``run`` flags (see the module docstring)."""
    _known(pod, _POD_FIELDS, "pod spec")
    (container,) = pod["containers"]
    _known(container, _CONTAINER_FIELDS, "container")
    security = {**(pod.get("securityContext") or {}), **(container.get("securityContext") or {})}
    _known(security, _SECURITY_FIELDS, "securityContext")
    flags = ["--network", "host", "--pull", "never"]
    flags += _security_flags(security)
    flags += _resource_flags(container.get("resources") or {})
    for item in container.get("env") or []:
        flags += ["--env", f"{item['name']}={_env_value(item, secrets or {})}"]
    run = PodRun(flags, [])
    volumes = {volume["name"]: volume for volume in pod.get("volumes") or []}
    for mount in container.get("volumeMounts") or []:
        volume = volumes[mount["name"]]
        if set(volume) - {"name", "emptyDir"}:
            raise NotImplementedError(f"volume {volume} is not an emptyDir")
        host = workdir / f"volume-{mount['name']}"
        host.mkdir()
        host.chmod(0o777)
        run.volumes[mount["name"]] = host
        flags += ["--volume", f"{host}:{mount['mountPath']}:rw"]
    if container.get("terminationMessagePath"):
        assert container.get("terminationMessagePolicy", "File") == "File"
        message = workdir / "termination-log"
        message.touch()
        message.chmod(0o666)
        run.termination_message = message
        flags += ["--volume", f"{message}:{container['terminationMessagePath']}:rw"]
    command = list(container.get("command") or [])
    if command:
        flags += ["--entrypoint", command[0]]
    run.command = [*command[1:], *(container.get("args") or [])]
    return run


def _known(spec: Mapping[str, Any], fields: set[str], what: str) -> None:
    unknown = set(spec) - fields
    if unknown:
        raise NotImplementedError(f"{what} fields the image test cannot emulate: {unknown}")


def _security_flags(security: Mapping[str, Any]) -> list[str]:
    flags: list[str] = []
    uid, gid = security.get("runAsUser"), security.get("runAsGroup")
    if security.get("runAsNonRoot"):
        assert uid not in (None, 0), "runAsNonRoot needs a numeric non-root runAsUser here"
    if uid is not None:
        flags += ["--user", f"{uid}:{gid}" if gid is not None else str(uid)]
    if security.get("fsGroup") is not None:
        flags += ["--group-add", str(security["fsGroup"])]
    if security.get("readOnlyRootFilesystem"):
        flags += ["--read-only", "--read-only-tmpfs=false"]
    if security.get("allowPrivilegeEscalation") is False:
        flags += ["--security-opt", "no-new-privileges"]
    capabilities = security.get("capabilities") or {}
    flags += [f"--cap-drop={name}" for name in capabilities.get("drop") or []]
    flags += [f"--cap-add={name}" for name in capabilities.get("add") or []]
    seccomp = (security.get("seccompProfile") or {}).get("type", "RuntimeDefault")
    if seccomp != "RuntimeDefault":
        raise NotImplementedError(f"seccompProfile {seccomp}")
    return flags


def _resource_flags(resources: Mapping[str, Any]) -> list[str]:
    limits = resources.get("limits") or {}
    flags: list[str] = []
    if "memory" in limits:
        flags += ["--memory", _bytes(str(limits["memory"]))]
    if "cpu" in limits:
        cpu = str(limits["cpu"])
        flags += ["--cpus", str(int(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu))]
    return flags


def _bytes(quantity: str) -> str:
    for suffix, factor in (("Ki", 1 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30)):
        if quantity.endswith(suffix):
            return str(int(quantity[:-2]) * factor)
    return str(int(quantity))


def _env_value(item: Mapping[str, Any], secrets: Mapping[tuple[str, str], str]) -> str:
    if "value" in item:
        return str(item["value"])
    ref = item["valueFrom"]["secretKeyRef"]
    return secrets[(ref["name"], ref["key"])]


#: Paths the engine itself creates in the container's filesystem: mount points for the
#: /etc/hosts, /etc/hostname and /etc/resolv.conf it provides (Debian's minimal root has none).
ENGINE_PATHS = frozenset({"/etc", "/etc/hosts", "/etc/hostname", "/etc/resolv.conf"})


@dataclass(frozen=True)
class Finished:
    """A container that ran to its end."""

    returncode: int
    stdout: str
    stderr: str
    #: ``podman diff``: every path the container changed outside its mounts (less
    #: :data:`ENGINE_PATHS`).
    changed: list[str]


def run_to_end(engine: Any, run: PodRun, image: str, timeout: float = 120) -> Finished:
    """``run`` the container in the foreground, then list what it changed and remove it."""
    name = f"waveflow-test-{uuid.uuid4().hex[:12]}"
    try:
        done = subprocess.run([engine.command, "run", "--name", name, *run.flags, image,
                               *run.command], env={**os.environ, **engine.env},
                              capture_output=True, text=True, timeout=timeout, check=False)
        diff = engine.run("diff", "--format", "json", name).stdout
    finally:
        engine.run("rm", "--force", "--ignore", name, check=False)
    changes = json.loads(diff or "{}")
    changed = sorted({path for paths in changes.values() for path in paths or []}
                     - ENGINE_PATHS)
    return Finished(done.returncode, done.stdout, done.stderr, changed)


def start(engine: Any, run: PodRun, image: str) -> str:
    """``run --detach``; returns the container's name (remove it with :func:`remove`)."""
    name = f"waveflow-test-{uuid.uuid4().hex[:12]}"
    engine.run("run", "--detach", "--name", name, *run.flags, image, *run.command)
    return name


def logs(engine: Any, name: str) -> str:
    done = engine.run("logs", name, check=False)
    return str(done.stdout) + str(done.stderr)


def stop_and_remove(engine: Any, name: str, grace_seconds: int = 10) -> int | None:
    """SIGTERM, wait up to ``grace_seconds``, then remove; returns the exit code."""
    engine.run("stop", "--time", str(grace_seconds), name, check=False)
    state = engine.run("inspect", "--format", "{{.State.ExitCode}}", name, check=False)
    engine.run("rm", "--force", "--ignore", name, check=False)
    return int(state.stdout) if state.returncode == 0 else None
