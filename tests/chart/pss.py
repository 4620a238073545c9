"""A checker of the Pod Security Standards "restricted" profile (Kubernetes 1.30+).

Shared by the chart tests (operator Deployment, helm-test and emulator pods) and the operator's
tests (the Jobs it builds): `restricted_violations(pod_spec)` lists every rule a PodSpec breaks,
in words, so an assertion failure says what to fix. It follows the published profile:
https://kubernetes.io/docs/concepts/security/pod-security-standards/ (baseline + restricted).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

#: Volume types the restricted profile allows.
ALLOWED_VOLUME_TYPES = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)
#: Sysctls the baseline profile allows.
SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    }
)
#: SELinux types the baseline profile allows.
ALLOWED_SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t"})
#: The only capability a restricted container may add.
ALLOWED_ADDED_CAPABILITIES = frozenset({"NET_BIND_SERVICE"})
#: Seccomp profile types that satisfy the restricted profile.
RESTRICTED_SECCOMP_TYPES = frozenset({"RuntimeDefault", "Localhost"})


def _containers(pod_spec: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for field in ("initContainers", "containers", "ephemeralContainers"):
        for container in pod_spec.get(field) or []:
            yield f"{field}[{container.get('name', '?')}]", container


def _apparmor_ok(profile: dict[str, Any] | None) -> bool:
    if not profile:
        return True
    return profile.get("type") in {"RuntimeDefault", "Localhost"}


def _selinux_violations(where: str, options: dict[str, Any] | None) -> list[str]:
    if not options:
        return []
    found = []
    if options.get("type", "") not in ALLOWED_SELINUX_TYPES:
        found.append(f"{where}: seLinuxOptions.type {options['type']!r} is not allowed")
    for field in ("user", "role"):
        if options.get(field):
            found.append(f"{where}: seLinuxOptions.{field} must not be set")
    return found


def _pod_level_violations(spec: dict[str, Any]) -> list[str]:
    found = []
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            found.append(f"pod: {field} must not be true")
    pod_ctx = spec.get("securityContext") or {}
    if (pod_ctx.get("windowsOptions") or {}).get("hostProcess"):
        found.append("pod: windowsOptions.hostProcess must not be true")
    if pod_ctx.get("runAsUser") == 0:
        found.append("pod: runAsUser must not be 0")
    seccomp = (pod_ctx.get("seccompProfile") or {}).get("type")
    if seccomp is not None and seccomp not in RESTRICTED_SECCOMP_TYPES:
        found.append(f"pod: seccompProfile.type {seccomp!r} must be RuntimeDefault or Localhost")
    if not _apparmor_ok(pod_ctx.get("appArmorProfile")):
        found.append("pod: appArmorProfile must be RuntimeDefault or Localhost")
    found += _selinux_violations("pod", pod_ctx.get("seLinuxOptions"))
    for sysctl in pod_ctx.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            found.append(f"pod: sysctl {sysctl.get('name')!r} is not in the safe set")
    for volume in spec.get("volumes") or []:
        kinds = set(volume) - {"name"}
        for kind in sorted(kinds - ALLOWED_VOLUME_TYPES):
            found.append(f"pod: volume {volume.get('name')!r} of type {kind!r} is not allowed")
    return found


def _container_violations(
    where: str, container: dict[str, Any], pod_ctx: dict[str, Any]
) -> list[str]:
    found = []
    ctx = container.get("securityContext") or {}
    if ctx.get("privileged"):
        found.append(f"{where}: privileged must not be true")
    if (ctx.get("windowsOptions") or {}).get("hostProcess"):
        found.append(f"{where}: windowsOptions.hostProcess must not be true")
    if ctx.get("procMount", "Default") != "Default":
        found.append(f"{where}: procMount must be Default")
    if ctx.get("allowPrivilegeEscalation") is not False:
        found.append(f"{where}: allowPrivilegeEscalation must be false")
    if ctx.get("runAsNonRoot") is False or (
        ctx.get("runAsNonRoot") is None and pod_ctx.get("runAsNonRoot") is not True
    ):
        found.append(f"{where}: runAsNonRoot must be true (on the container or the pod)")
    if ctx.get("runAsUser") == 0:
        found.append(f"{where}: runAsUser must not be 0")
    seccomp = (ctx.get("seccompProfile") or {}).get("type")
    pod_seccomp = (pod_ctx.get("seccompProfile") or {}).get("type")
    if seccomp is not None and seccomp not in RESTRICTED_SECCOMP_TYPES:
        found.append(
            f"{where}: seccompProfile.type {seccomp!r} must be RuntimeDefault or Localhost"
        )
    elif seccomp is None and pod_seccomp not in RESTRICTED_SECCOMP_TYPES:
        found.append(
            f"{where}: seccompProfile must be RuntimeDefault or Localhost (here or on the pod)"
        )
    if not _apparmor_ok(ctx.get("appArmorProfile")):
        found.append(f"{where}: appArmorProfile must be RuntimeDefault or Localhost")
    found += _selinux_violations(where, ctx.get("seLinuxOptions"))
    capabilities = ctx.get("capabilities") or {}
    if "ALL" not in (capabilities.get("drop") or []):
        found.append(f"{where}: capabilities.drop must include ALL")
    for added in sorted(set(capabilities.get("add") or []) - ALLOWED_ADDED_CAPABILITIES):
        found.append(f"{where}: capability {added} must not be added")
    for port in container.get("ports") or []:
        if port.get("hostPort"):
            found.append(f"{where}: hostPort {port['hostPort']} must not be set")
    return found


def restricted_violations(pod_spec: dict[str, Any]) -> list[str]:
    """Every way `pod_spec` breaks the "restricted" Pod Security Standard; [] when it complies."""
    pod_ctx = pod_spec.get("securityContext") or {}
    found = _pod_level_violations(pod_spec)
    for where, container in _containers(pod_spec):
        found += _container_violations(where, container, pod_ctx)
    return found
