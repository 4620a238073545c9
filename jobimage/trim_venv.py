"""Trim an installed virtualenv to what the images run, then compile its bytecode.

Run in the images' build stage (``python trim_venv.py /opt/waveflow``), after ``pip install``
and ``pip uninstall pip setuptools``. Every removal is something no WaveFlow process loads:

- botocore's and boto3's models of AWS services other than S3, SQS and STS (STS: IRSA's
  AssumeRoleWithWebIdentity); the job calls S3, the operator SQS and S3;
- test suites shipped inside wheels (numpy's), typing stubs and Cython/C headers;
- the symbol tables of Python extension modules (``strip --strip-unneeded`` keeps the dynamic
  symbols the loader needs; skipped when ``strip`` is missing): PyAV's ship unstripped. The
  libraries auditwheel vendors into ``<package>.libs/`` are left alone: patchelf rewrote their
  program headers, and stripping numpy's OpenBLAS that way made it unloadable ("ELF load
  command address/offset not page-aligned").

Bytecode is compiled last, once: the root filesystem is read-only at run time, so without it
every Pod would compile every module it imports on each start.
"""

from __future__ import annotations

import compileall
import shutil
import subprocess
import sys
from pathlib import Path

#: The AWS services whose botocore/boto3 models stay.
AWS_SERVICES = frozenset({"s3", "sqs", "sts"})
#: Directory names that only hold a package's own tests.
TEST_DIRS = frozenset({"tests"})
#: Files no import reads: stubs, Cython declarations and sources, C headers.
DEAD_SUFFIXES = (".pyi", ".pxd", ".pyx", ".h")


def site_packages(venv: Path) -> Path:
    (found,) = venv.glob("lib/python3*/site-packages")
    return found


def drop_aws_models(site: Path) -> int:
    """Remove the service models of every AWS service we do not call; returns bytes freed."""
    freed = 0
    for data in (site / "botocore" / "data", site / "boto3" / "data"):
        if not data.is_dir():
            continue
        for service in data.iterdir():
            if service.is_dir() and service.name not in AWS_SERVICES:
                freed += tree_bytes(service)
                shutil.rmtree(service)
    return freed


def drop_dead_files(site: Path) -> int:
    """Remove in-wheel test suites, stubs and headers; returns bytes freed."""
    freed = 0
    for path in sorted(site.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_dir() and path.name in TEST_DIRS and (path / "__init__.py").exists():
            freed += tree_bytes(path)
            shutil.rmtree(path)
        elif path.is_file() and path.suffix in DEAD_SUFFIXES:
            freed += path.stat().st_size
            path.unlink()
    for cache in list(site.rglob("__pycache__")):
        shutil.rmtree(cache)
    return freed


def strip_extensions(site: Path) -> int:
    """``strip --strip-unneeded`` every extension module that still has a symbol table; returns
    bytes freed (0 without ``strip``). Vendored ``*.libs/`` libraries are left as they are."""
    strip = shutil.which("strip")
    if strip is None:
        return 0
    objects = [p for p in site.rglob("*.so")
               if p.is_file() and not p.is_symlink() and not p.parent.name.endswith(".libs")
               and has_symbol_table(p)]
    before = sum(p.stat().st_size for p in objects)
    for path in objects:
        subprocess.run([strip, "--strip-unneeded", str(path)], check=True)
    return before - sum(p.stat().st_size for p in objects)


def has_symbol_table(path: Path) -> bool:
    """Whether a 64-bit little-endian ELF file has a ``.symtab`` section (SHT_SYMTAB)."""
    with path.open("rb") as elf:
        header = elf.read(64)
        if header[:6] != b"\x7fELF\x02\x01":
            return False
        offset = int.from_bytes(header[0x28:0x30], "little")
        size = int.from_bytes(header[0x3A:0x3C], "little")
        count = int.from_bytes(header[0x3C:0x3E], "little")
        elf.seek(offset)
        table = elf.read(size * count)
    return any(int.from_bytes(table[i * size + 4:i * size + 8], "little") == 2
               for i in range(count))


def tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def main(venv: Path) -> None:
    site = site_packages(venv)
    for what, freed in (("AWS models", drop_aws_models(site)),
                        ("tests, stubs, headers", drop_dead_files(site)),
                        ("symbol tables", strip_extensions(site))):
        print(f"trim_venv: {what}: {freed / 1e6:.1f} MB", flush=True)
    if not compileall.compile_dir(str(venv / "lib"), quiet=1, workers=0):
        sys.exit("trim_venv: bytecode compilation failed")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
