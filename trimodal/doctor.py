"""Preflight for a fresh machine: what `make` needs before the 3-minute build, each problem with its fix.

Standard library only, so that it runs before the virtual environment exists: ``make`` runs it as
``python3 trimodal/doctor.py`` (``make doctor`` prints every check; ``make install`` and ``make run`` stop on
the first blocking problem, saying exactly what to install). Checks: the Python version (and Triton's Python
backend stub for it once the venv has the wheel), the ``venv`` module, glibc, free disk, the apt packages
(and whether they can be installed: root, sudo, apt), free ports for ``make run``, and a half-made venv left
by a failed step (``--repair`` removes it so that ``make`` rebuilds it).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

SUPPORTED_PYTHON = ((3, 10), (3, 12))  # inclusive; 3.13: numpy<2 (nvidia-pytriton's pin) has no wheels
MIN_GLIBC = (2, 35)  # nvidia-pytriton 0.7.0 is a manylinux_2_35 wheel
# a fresh clone after `make test`, measured: .venv 2.6 GB, .venv-analyzer 0.6, .venv-load 0.3, build/ 0.8, graphs 0.25
MIN_FREE_GB = 5.0
# apt package -> what needs it (the same list as the Makefile's APT_PACKAGES, python3-venv checked by import)
APT_PACKAGES = {
    "espeak-ng": "the spoken-digit dataset",
    "sox": "resampling the spoken digits",
    "libb64-0d": "perf_analyzer (from the tritonclient wheel)",
}
STUBS = "pytriton/tritonserver/python_backend_stubs"


@dataclass(frozen=True)
class Check:
    """One check: ``ok``, ``warn`` (works, but read this) or ``fail`` (make would fail: fix it first)."""

    name: str
    status: str
    detail: str

    def line(self) -> str:
        """One line for the terminal."""
        return f"{self.status:<4} {self.name}: {self.detail}"


def check_python(version: tuple[int, int] = sys.version_info[:2], executable: str = sys.executable) -> Check:
    """Is this Python one the pins can install on?"""
    low, high = SUPPORTED_PYTHON
    shown = f"{version[0]}.{version[1]}"
    if low <= version <= high:
        return Check("python", "ok", f"{shown} ({executable})")
    return Check("python", "fail", f"{shown} cannot work (supported: {low[0]}.{low[1]}-{high[0]}.{high[1]}; numpy<2, "
                 "which the bundled Triton needs, has no wheels for 3.13+): install python3.12 and run "
                 "`make PYTHON=python3.12 ...`")  # fmt: skip


def check_venv_module(has_ensurepip: bool | None = None, version: tuple[int, int] = sys.version_info[:2]) -> Check:
    """Can this Python make a venv with pip in it (Debian splits that off into python3-venv)?"""
    if has_ensurepip is None:
        try:
            import ensurepip  # noqa: F401
            import venv  # noqa: F401

            has_ensurepip = True
        except ImportError:
            has_ensurepip = False
    if has_ensurepip:
        return Check("venv module", "ok", "venv + ensurepip importable")
    return Check("venv module", "fail", f"this Python has no ensurepip: apt-get install python3-venv (or "
                 f"python{version[0]}.{version[1]}-venv); without apt, install a Python that ships venv")  # fmt: skip


def glibc_version(confstr: Callable[[str], str | None] | None = None) -> tuple[int, int] | None:
    """The glibc version, or None when the C library is not glibc (musl: Alpine)."""
    reader = confstr or os.confstr
    try:
        value = reader("CS_GNU_LIBC_VERSION") or ""
    except (ValueError, OSError):
        value = ""
    if not value.startswith("glibc "):
        return None
    major, minor = value.split()[1].split(".")[:2]
    return int(major), int(minor)


def check_glibc(version: tuple[int, int] | None) -> Check:
    """Is glibc new enough for the Triton wheel?"""
    need = f"{MIN_GLIBC[0]}.{MIN_GLIBC[1]}"
    if version is None:
        return Check("glibc", "fail", f"not a glibc system (musl?): the Triton wheel needs glibc >= {need}")
    shown = f"{version[0]}.{version[1]}"
    if version < MIN_GLIBC:
        return Check("glibc", "fail", f"{shown} < {need} (the nvidia-pytriton wheel is manylinux_2_35): "
                     "use Debian 12 / Ubuntu 22.04 or newer, or a container of one")  # fmt: skip
    return Check("glibc", "ok", shown)


def check_disk(folder: Path, need_gb: float) -> Check:
    """Enough free disk where the venv and build/ go?"""
    free_gb = shutil.disk_usage(folder).free / 1e9
    if free_gb < need_gb:
        return Check("disk", "fail", f"{free_gb:.1f} GB free in {folder}, about {need_gb:.1f} GB needed")
    return Check("disk", "ok", f"{free_gb:.1f} GB free (about {need_gb:.1f} GB needed)")


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether ``host:port`` can be bound now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def check_ports(ports: Sequence[int], is_free: Callable[[int], bool] = port_free) -> Check:
    """Are the ports `make run` serves on free?"""
    taken = [port for port in ports if not is_free(port)]
    if taken:
        return Check("ports", "fail", f"{', '.join(map(str, taken))} in use (another tritonserver? `ss -ltnp`); stop "
                     "it, or serve elsewhere (`trimodal serve --http-port/--grpc-port/--metrics-port`)")  # fmt: skip
    return Check("ports", "ok", f"{', '.join(map(str, ports))} free")


def _dpkg_installed(package: str) -> bool:
    return subprocess.run(["dpkg", "-s", package], capture_output=True).returncode == 0


def check_apt(
    installed: Callable[[str], bool] | None = None,
    is_root: bool | None = None,
    has: Callable[[str], str | None] = shutil.which,
) -> Check:
    """Are the apt packages there, or can make install them (root or sudo, and apt)?"""
    if has("dpkg") is None:
        return Check("system packages", "warn", "no dpkg/apt: make cannot install them; provide the commands "
                     "espeak-ng and sox and the library libb64.so.0d yourself")  # fmt: skip
    installed = installed or _dpkg_installed
    missing = [package for package in APT_PACKAGES if not installed(package)]
    if not missing:
        return Check("system packages", "ok", ", ".join(APT_PACKAGES) + " installed")
    needs = "; ".join(f"{package}: {APT_PACKAGES[package]}" for package in missing)
    root = os.geteuid() == 0 if is_root is None else is_root
    if root and has("apt-get"):
        return Check("system packages", "ok", f"missing {' '.join(missing)}: make installs them with apt ({needs})")
    if not root and has("sudo") and has("apt-get"):
        return Check("system packages", "warn", f"missing {' '.join(missing)}: make runs `sudo apt-get install` "
                     f"(it may ask for a password) ({needs})")  # fmt: skip
    return Check("system packages", "fail", f"missing {' '.join(missing)} and no root/sudo or apt-get to install "
                 f"them: have `apt-get install -y {' '.join(missing)}` run as root ({needs}), then rerun")  # fmt: skip


def venv_state(venv: Path) -> str:
    """``absent``, ``complete`` (installed by make), ``partial`` (make finishes it) or ``broken`` (rebuild it)."""
    if not venv.exists():
        return "absent"
    python = venv / "bin" / "python"
    if not python.exists():
        return "broken"
    probe = subprocess.run([str(python), "-c", "import pip, sys; print(sys.version_info[:2])"], capture_output=True)
    if probe.returncode != 0:
        return "broken"
    return "complete" if (venv / ".installed").exists() else "partial"


def check_venv(venv: Path, repair: bool = False) -> Check:
    """Detect a venv left half-made by a failed step; with ``repair``, remove a broken one so make rebuilds it."""
    state = venv_state(venv)
    if state == "broken":
        if repair:
            shutil.rmtree(venv)
            return Check("venv", "ok", f"{venv} was half-made (no working python/pip): removed, make rebuilds it")
        return Check("venv", "warn", f"{venv} is half-made (no working python/pip): `make install` rebuilds it")
    detail = {"absent": "not created yet (make install creates it)", "complete": "installed",
              "partial": "created but the install did not finish: make install resumes it"}[state]  # fmt: skip
    return Check("venv", "ok", f"{venv}: {detail}")


def check_stub(venv: Path, version: tuple[int, int] = sys.version_info[:2]) -> Check:
    """Does the Triton wheel in the venv carry a Python backend stub for this Python?"""
    stubs = sorted(venv.glob(f"lib/python*/site-packages/{STUBS}"))
    shown = f"{version[0]}.{version[1]}"
    if not stubs:
        return Check("python backend stub", "ok", "checked after install (the wheel ships stubs for 3.8-3.13)")
    stub = stubs[0] / shown / "triton_python_backend_stub"
    if not stub.is_file():
        have = ", ".join(sorted(p.name for p in stubs[0].iterdir()))
        return Check("python backend stub", "fail", f"no stub for Python {shown} in {stubs[0]} (has {have})")
    return Check("python backend stub", "ok", str(stub))


def run_checks(venv: Path, ports: Sequence[int], repair: bool = False) -> list[Check]:
    """Every check, in the order make needs them."""
    venv_check = check_venv(venv, repair=repair)
    need_gb = 0.5 if venv_state(venv) == "complete" else MIN_FREE_GB
    checks = [check_python(), check_venv_module(), check_glibc(glibc_version()),
              check_disk(venv.resolve().parent, need_gb), check_apt(), venv_check, check_stub(venv)]  # fmt: skip
    if ports:
        checks.append(check_ports(ports))
    return checks


def main(argv: Sequence[str] | None = None) -> int:
    """Print the checks; exit 1 when one fails (``--quiet``: print only problems)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", type=Path, default=Path(".venv"))
    parser.add_argument("--ports", default="", help="ports that must be free, e.g. 8000,8001,8002")
    parser.add_argument("--repair", action="store_true", help="remove a half-made venv so that make rebuilds it")
    parser.add_argument("--quiet", action="store_true", help="print only warnings and failures")
    args = parser.parse_args(argv)
    ports = [int(port) for port in args.ports.split(",") if port.strip()]
    checks = run_checks(args.venv, ports, repair=args.repair)
    for check in checks:
        if not args.quiet or check.status != "ok":
            print(f"doctor: {check.line()}", file=sys.stderr if check.status == "fail" else sys.stdout)
    failed = [check for check in checks if check.status == "fail"]
    if failed:
        print(f"doctor: {len(failed)} problem(s) above; fix them, then rerun (`make doctor` checks again)",
              file=sys.stderr)  # fmt: skip
        return 1
    if not args.quiet:
        print(f"doctor: ready ({platform.system()} {platform.machine()}, Python {platform.python_version()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
