"""Build WaveFlow's two images with whichever container engine this machine has.

    python charts/images/build.py base       the base image's name (made when missing)
    python charts/images/build.py build [--job TAG] [--operator TAG]
    python charts/images/build.py sizes [--job TAG] [--operator TAG]
    python charts/images/build.py save DIR [--job TAG] [--operator TAG]   image archives (kind load)
    python charts/images/build.py push REGISTRY [--job TAG] [--operator TAG]  e.g. an ECR registry

The engine is ``$CONTAINER_ENGINE``, else Docker when its daemon answers, else podman. With
podman, ``charts/images/containers.conf`` is used when runc is installed (lower default
ulimits, runc instead of crun: what sandboxed CI machines need), builds share the host's network
and CA certificates (``RUN pip install`` behind an intercepting proxy), and nothing else changes.

The base is ``$PYTHON_IMAGE`` (default ``python:3.11-slim-bookworm``): used when present,
pulled when a registry answers, and otherwise replaced by a stand-in built from Debian's own
packages (mmdebstrap: Python 3.11 of bookworm with venv and CA certificates), tagged
:data:`STANDIN` and kept in the engine's image store, so it is made once per machine.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_BASE = "python:3.11-slim-bookworm"
STANDIN = "localhost/waveflow/python-standin:3.11-slim-bookworm"
DOCKERFILES = {"job": REPO / "jobimage" / "Dockerfile",
               "operator": REPO / "operator" / "Dockerfile"}
DEFAULT_TAGS = {"job": "waveflow/job:dev", "operator": "waveflow/operator:dev"}
STANDIN_PACKAGES = "python3,python3-venv,python-is-python3,ca-certificates"


class EngineMissing(RuntimeError):
    """Neither a running Docker nor podman: `make tools-podman` installs podman."""


@dataclass(frozen=True)
class Engine:
    """A container engine's command and the environment it runs with."""

    command: str
    env: dict[str, str] = field(default_factory=dict)

    @property
    def is_podman(self) -> bool:
        return Path(self.command).name.startswith("podman")

    def run(self, *args: str, check: bool = True, capture: bool = True,
            timeout: float | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.command, *args], env={**os.environ, **self.env},
                              capture_output=capture, text=True, check=check, timeout=timeout)

    def has_image(self, name: str) -> bool:
        return self.run("image", "inspect", name, check=False).returncode == 0

    def build_flags(self) -> list[str]:
        """What `build` needs beyond the Dockerfile on this engine."""
        if not self.is_podman:
            return []
        flags = ["--network", "host"]
        if Path("/etc/ssl/certs").is_dir():
            flags += ["--volume", "/etc/ssl/certs:/etc/ssl/certs:ro"]
        return flags


def detect_engine(chosen: str | None = None) -> Engine:
    """``chosen``, else ``$CONTAINER_ENGINE``, else a Docker whose daemon answers, else podman."""
    chosen = chosen or os.environ.get("CONTAINER_ENGINE")
    if not chosen:
        docker = shutil.which("docker")
        if docker and subprocess.run([docker, "info"], capture_output=True,
                                     check=False).returncode == 0:
            chosen = docker
        else:
            chosen = shutil.which("podman") or ""
    if not chosen or not shutil.which(chosen):
        raise EngineMissing("no container engine: start Docker, or `make tools-podman`")
    env: dict[str, str] = {}
    if Path(chosen).name.startswith("podman") and "CONTAINERS_CONF" not in os.environ \
            and shutil.which("runc"):
        env["CONTAINERS_CONF"] = str(Path(__file__).resolve().parent / "containers.conf")
    return Engine(shutil.which(chosen) or chosen, env)


def ensure_base(engine: Engine, wanted: str | None = None,
                log: Callable[[str], object] = print) -> str:
    """The base image's name: ``wanted`` (or $PYTHON_IMAGE) if present or pullable, else the
    Debian stand-in (built once)."""
    wanted = wanted or os.environ.get("PYTHON_IMAGE") or DEFAULT_BASE
    if engine.has_image(wanted):
        return wanted
    try:
        if engine.run("pull", "--quiet", wanted, check=False, timeout=300).returncode == 0:
            return wanted
    except subprocess.TimeoutExpired:
        log(f"{wanted}: the registry did not answer within 300 s")
    if wanted != DEFAULT_BASE:
        raise RuntimeError(f"base image {wanted} is neither present nor pullable")
    if not engine.has_image(STANDIN):
        log(f"{wanted}: no registry answers; building the stand-in {STANDIN} from Debian")
        build_standin(engine)
    return STANDIN


def build_standin(engine: Engine) -> None:
    """Debian bookworm's Python 3.11 (minbase + venv + CA certificates) as a one-layer image."""
    mmdebstrap = shutil.which("mmdebstrap")
    if mmdebstrap is None:
        raise EngineMissing("mmdebstrap is missing: `make tools-podman` installs it")
    with tempfile.TemporaryDirectory(prefix="waveflow-standin-") as scratch:
        rootfs = Path(scratch) / "rootfs.tar"
        subprocess.run([mmdebstrap, "--quiet", "--variant=minbase",
                        f"--include={STANDIN_PACKAGES}", "bookworm", str(rootfs)], check=True)
        engine.run("import", "--change", 'CMD ["python3"]', str(rootfs), STANDIN)


def build(engine: Engine, image: str, tag: str, base: str, *, quiet: bool = True) -> None:
    """Build one image (``job`` or ``operator``) from its Dockerfile in the repository."""
    done = engine.run("build", *engine.build_flags(), "--build-arg", f"PYTHON_IMAGE={base}",
                      "-f", str(DOCKERFILES[image]), "-t", tag, str(REPO), capture=quiet,
                      check=False)
    if done.returncode != 0:
        output = (done.stdout or "") + (done.stderr or "")
        raise RuntimeError(f"building {tag} failed ({done.returncode}):\n{output[-4000:]}")


def save(engine: Engine, tag: str, archive: Path) -> Path:
    """The image as a docker-archive tar, named as Docker and containerd name it (podman would
    write ``localhost/waveflow/job:dev``; a kind node resolves ``waveflow/job:dev`` to
    ``docker.io/waveflow/job:dev``)."""
    name = tag
    first = tag.split("/")[0]
    if engine.is_podman and "/" in tag and not ("." in first or ":" in first
                                               or first == "localhost"):
        name = f"docker.io/{tag}"
        engine.run("tag", tag, name)
    engine.run("save", "-o", str(archive), name)
    return archive


@dataclass(frozen=True)
class LayerBytes:
    """What an image adds above its base: as stored (uncompressed) and as pushed (gzip)."""

    uncompressed: int
    gzipped: int


def bytes_above_base(engine: Engine, image: str, base: str) -> LayerBytes:
    """Sum the image's own layers (those after the base's), uncompressed and gzip'd."""
    base_layers = len(json.loads(engine.run("image", "inspect", base).stdout)[0]
                      ["RootFS"]["Layers"])
    with tempfile.TemporaryDirectory(prefix="waveflow-size-") as scratch:
        archive = Path(scratch) / "image.tar"
        engine.run("save", "-o", str(archive), image)
        with tarfile.open(archive) as tar:
            manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
            uncompressed = gzipped = 0
            for layer in manifest[0]["Layers"][base_layers:]:
                member = tar.extractfile(layer)
                assert member is not None
                raw, packed = _gzip_size(member)
                uncompressed += raw
                gzipped += packed
    return LayerBytes(uncompressed, gzipped)


def _gzip_size(stream) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """(bytes read, bytes gzip at level 6 writes), streaming."""

    class Counter:
        written = 0

        def write(self, data: bytes) -> int:
            self.written += len(data)
            return len(data)

        def flush(self) -> None:
            pass

    counter = Counter()
    raw = 0
    with gzip.GzipFile(fileobj=counter, mode="wb", compresslevel=6, mtime=0) as packer:  # type: ignore[arg-type]
        while chunk := stream.read(1 << 20):
            raw += len(chunk)
            packer.write(chunk)
    return raw, counter.written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("base", "build", "sizes", "save", "push"))
    parser.add_argument("target", nargs="?",
                        help="save: the directory for the archives; push: the registry")
    parser.add_argument("--job", default=DEFAULT_TAGS["job"], help="the job image's tag")
    parser.add_argument("--operator", default=DEFAULT_TAGS["operator"],
                        help="the operator image's tag")
    args = parser.parse_args(argv)
    try:
        engine = detect_engine()
    except EngineMissing as error:
        print(f"images: {error}", file=sys.stderr)
        return 1
    tags = {"job": args.job, "operator": args.operator}
    base = "" if args.action in ("save", "push") else ensure_base(engine)
    if args.action == "base":
        print(base)
    elif args.action == "build":
        for image, tag in tags.items():
            print(f"{Path(engine.command).name} build {tag} (base {base})", flush=True)
            build(engine, image, tag, base, quiet=False)
    elif args.action == "save":
        if not args.target:
            parser.error("save needs a directory")
        Path(args.target).mkdir(parents=True, exist_ok=True)
        for image, tag in tags.items():
            print(save(engine, tag, Path(args.target) / f"{image}.tar"))
    elif args.action == "push":
        if not args.target:
            parser.error("push needs a registry, e.g. 123456789012.dkr.ecr.eu-west-1.amazonaws.com")
        for tag in tags.values():
            remote = f"{args.target.rstrip('/')}/{tag}"
            engine.run("tag", tag, remote)
            engine.run("push", remote, capture=False)
            print(f"pushed {remote}")
    else:
        print(f"{'image':<28} {'MB above base':>14} {'gzip MB':>8}")
        for tag in tags.values():
            size = bytes_above_base(engine, tag, base)
            print(f"{tag:<28} {size.uncompressed / 1e6:>14.1f} {size.gzipped / 1e6:>8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
