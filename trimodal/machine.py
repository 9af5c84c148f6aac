"""The machine a build or a benchmark ran on: its CPU model and the instruction sets that pick float kernels.

PyTorch, ONNX Runtime and numpy's BLAS choose their kernels by instruction set (AVX2, AVX-512, VNNI, AMX), and
the kernels round differently, so the same seeds train slightly different weights on an AMD EPYC and on an Intel
Xeon (measured: test accuracies up to 1.2 points apart). A build records
:func:`fingerprint` so that its committed figures are compared exactly only with a build from the same kind of
machine.
"""

from __future__ import annotations

import os
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
ISA_FLAGS: tuple[str, ...] = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8")
"""The /proc/cpuinfo flags that change which float kernels the libraries run."""


def _first_fields(cpuinfo: Path) -> dict[str, str]:
    """Each field's first value in /proc/cpuinfo (the first CPU's; empty where the file cannot be read)."""
    fields: dict[str, str] = {}
    try:
        text = cpuinfo.read_text()
    except OSError:
        return fields
    for line in text.splitlines():
        name, colon, value = line.partition(":")
        if colon:
            fields.setdefault(name.strip(), value.strip())
    return fields


def cpu_model(cpuinfo: Path = CPUINFO) -> str:
    """The CPU's model name from /proc/cpuinfo, or ``?`` where there is none."""
    return _first_fields(cpuinfo).get("model name") or "?"


def isa_flags(cpuinfo: Path = CPUINFO) -> list[str]:
    """The :data:`ISA_FLAGS` this CPU has, in that order."""
    return _present_flags(_first_fields(cpuinfo))


def _present_flags(fields: dict[str, str]) -> list[str]:
    present = set(fields.get("flags", "").split())
    return [flag for flag in ISA_FLAGS if flag in present]


def fingerprint(cpuinfo: Path = CPUINFO) -> dict[str, object]:
    """What decides a build's last bits: CPU model, kernel-selecting instruction sets, core count.

    Args:
        cpuinfo: the file to read once (tests pass their own).

    Returns:
        ``{"cpu": model name, "isa": [flags], "cores": n}``, JSON-ready.
    """
    fields = _first_fields(cpuinfo)
    return {"cpu": fields.get("model name") or "?", "isa": _present_flags(fields), "cores": os.cpu_count() or 0}
