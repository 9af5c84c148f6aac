"""The machine fingerprint a build records (what decides the last bits of trained weights)."""

import os
from pathlib import Path

import pytest

from trimodal.machine import cpu_model, fingerprint, isa_flags

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu sse2 avx2 fma avx512f avx512_vnni amx_tile amx_int8
"""


def test_fingerprint_reads_model_and_kernel_selecting_flags(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(CPUINFO)
    assert cpu_model(cpuinfo) == "Intel(R) Xeon(R) Processor"
    assert isa_flags(cpuinfo) == ["avx2", "fma", "avx512f", "avx512_vnni", "amx_tile", "amx_int8"]
    record = fingerprint(cpuinfo)
    assert record["cpu"] == "Intel(R) Xeon(R) Processor" and record["cores"] >= 1


def test_an_unreadable_cpuinfo_gives_an_unknown_machine(tmp_path: Path) -> None:
    missing = tmp_path / "absent"
    assert cpu_model(missing) == "?" and isa_flags(missing) == []


def test_this_machine_has_a_fingerprint() -> None:
    """On this machine the record names the CPU /proc/cpuinfo names (not the unknown ``?``) and its core count."""
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    models = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")]
    if not models:
        pytest.skip("this machine's /proc/cpuinfo names no CPU model")
    record = fingerprint()
    assert record["cpu"] == models[0] != "?"
    assert record["cores"] == os.cpu_count() and all(flag in text.split() for flag in record["isa"])
