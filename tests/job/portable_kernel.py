"""The audio kernel as an aarch64 (Graviton) build compiles it, built and loaded on this machine.

``-DWAVEFLOW_PORTABLE_KERNEL`` turns off every x86-only path (kernel.h's ``WF_X86_SIMD``), so the
build compiles exactly the plain C an aarch64 build compiles. Two defaults of aarch64 GCC that
change behaviour are added: ``char`` is unsigned, and ``a * b + c`` is contracted into a fused
multiply-add (one rounding instead of two). Contraction can move a result by an ulp (the true
peak's double sums, the filter's state, the sums of squares), so the kernel is built both with
and without it. Everything else is what pip's build uses: the interpreter's compiler and CFLAGS
(as setuptools passes them, less ``-g``) and pyproject's sources and extra-compile-args.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import re
import shlex
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parents[2]
MODULE = "waveflow_job.audio._kernel"

#: Variant name -> the flags it adds to the pyproject build.
VARIANTS = {
    # aarch64 GCC: unsigned char, FMA contraction (x86 GCC contracts too, once FMA is enabled).
    "portable": ("-DWAVEFLOW_PORTABLE_KERNEL", "-funsigned-char", "-mfma", "-ffp-contract=fast"),
    # The same without contraction: separate roundings, as SSE2 and numpy compute.
    "portable-no-fma": ("-DWAVEFLOW_PORTABLE_KERNEL", "-funsigned-char", "-ffp-contract=off"),
}


def runnable_variants() -> list[str]:
    """The variants this CPU can run: the contracting one needs x86's FMA instructions."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        flags = []
    return [v for v in VARIANTS if "-mfma" not in VARIANTS[v] or "fma" in flags]


def pyproject_extension() -> dict[str, Any]:
    """The kernel's entry in pyproject's ``[[tool.setuptools.ext-modules]]``."""
    with (REPO / "pyproject.toml").open("rb") as f:
        modules = tomllib.load(f)["tool"]["setuptools"]["ext-modules"]
    (entry,) = [m for m in modules if m["name"] == MODULE]
    return entry


def compile_command(variant: str, output: Path) -> list[str]:
    """The compiler line that builds ``variant`` into the shared object ``output``."""
    entry = pyproject_extension()
    cflags = [f for f in shlex.split(sysconfig.get_config_var("CFLAGS") or "") if f != "-g"]
    return [
        *shlex.split(sysconfig.get_config_var("CC") or "cc"),
        *cflags,
        *shlex.split(sysconfig.get_config_var("CCSHARED") or "-fPIC"),
        f"-I{sysconfig.get_paths()['include']}",
        *entry["extra-compile-args"],
        *VARIANTS[variant],
        "-shared",
        *(str(REPO / source) for source in entry["sources"]),
        "-o", str(output),
    ]


#: What only an x86 compiler accepts: target attributes and clones, CPU feature tests, SSE/AVX
#: intrinsics, builtins and headers, inline assembly.
X86_ONLY = re.compile(r"\btarget(_clones)?\s*\(|__builtin_(cpu|ia32)_|\b_mm\d*_|\b__m\d+|"
                      r"[a-z]mmintrin|\b(__)?asm(__)?\b")


def x86_only_lines(source: Path, defines: tuple[str, ...]) -> list[str]:
    """The lines of the kernel's own files (not system headers) in ``source`` preprocessed
    with ``defines`` that name x86-only code (X86_ONLY)."""
    out = subprocess.run([*shlex.split(sysconfig.get_config_var("CC") or "cc"), "-E", *defines,
                          f"-I{sysconfig.get_paths()['include']}", str(source)],
                         capture_output=True, text=True, check=True).stdout
    found, ours = [], False
    for line in out.splitlines():
        marker = re.match(r'# \d+ "([^"]+)"', line)
        if marker:
            ours = Path(marker.group(1)).parent == source.parent
        elif ours and X86_ONLY.search(line):
            found.append(line.strip())
    return found


def load(path: Path) -> ModuleType:
    """The shared object at ``path`` as a module of the kernel's real name (its init function
    is PyInit__kernel), leaving the installed kernel in sys.modules: a single-phase extension
    registers itself there when it loads, so the installed entry is put back."""
    installed = sys.modules.get(MODULE)
    loader = importlib.machinery.ExtensionFileLoader(MODULE, str(path))
    spec = importlib.util.spec_from_file_location(MODULE, path, loader=loader)
    assert spec is not None
    try:
        module = importlib.util.module_from_spec(spec)
        loader.exec_module(module)
    finally:
        if installed is None:
            sys.modules.pop(MODULE, None)
        else:
            sys.modules[MODULE] = installed
    return module


def build(variants: list[str], directory: Path) -> dict[str, ModuleType]:
    """Every variant compiled side by side (one compiler process each), then loaded."""
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    outputs = {v: directory / v / f"_kernel{suffix}" for v in variants}
    running = {}
    for variant, output in outputs.items():
        output.parent.mkdir(parents=True)
        running[variant] = subprocess.Popen(compile_command(variant, output),
                                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                            text=True)
    failures = []
    for variant, process in running.items():
        log, _ = process.communicate()
        if process.returncode != 0:
            failures.append(f"{variant}: exit {process.returncode}\n{log}")
        elif "warning" in log:  # -Wall -Wextra: the portable code must build as cleanly
            failures.append(f"{variant}: warnings\n{log}")
    if failures:
        raise RuntimeError("the portable kernel does not build:\n" + "\n".join(failures))
    return {variant: load(output) for variant, output in outputs.items()}


def cross_build(compiler: str, directory: Path) -> tuple[Path, str]:
    """The kernel built by an aarch64 cross compiler as pip would build it (pyproject's sources
    and flags, position-independent, the Python headers): each source compiled side by side,
    then linked. Returns the shared object and the compilers' output."""
    entry = pyproject_extension()
    flags = ["-O3", "-fPIC", f"-I{sysconfig.get_paths()['include']}",
             *entry["extra-compile-args"]]
    objects, running = [], []
    for source in entry["sources"]:
        obj = directory / (Path(source).stem + ".o")
        objects.append(obj)
        running.append(subprocess.Popen([compiler, *flags, "-c", str(REPO / source), "-o",
                                         str(obj)], stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True))
    logs = [process.communicate()[0] for process in running]
    if any(process.returncode for process in running):
        raise RuntimeError("the kernel does not build for aarch64:\n" + "\n".join(logs))
    output = directory / "_kernel.abi3.so"
    link = subprocess.run([compiler, "-shared", *map(str, objects), "-o", str(output)],
                          capture_output=True, text=True, check=True)
    return output, "".join(logs) + link.stdout + link.stderr
