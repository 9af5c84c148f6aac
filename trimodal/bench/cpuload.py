"""How busy the machine was during a level, and how much of that was outside this run.

``/proc/stat`` gives the CPU time of the whole machine; the CPU time of this run is the sum over this process
and its descendants (the servers, their Python-backend stubs, in-process workers) from ``/proc/<pid>/stat``.
The difference over a level, divided by its wall time, is the number of cores that processes outside the run
kept busy while it was measured: another test suite, a build, a second benchmark. A level measured on a busy
machine is not comparable with the others; the report warns about it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
BUSY_FRACTION = 0.5  # warn when outside processes used more than this fraction of the cores


@dataclass(frozen=True)
class CpuSample:
    """Cumulative CPU seconds of the machine (busy, all cores) and of this run's processes at one instant."""

    wall_s: float
    machine_busy_s: float
    run_s: float


def _ticks() -> float:
    return float(os.sysconf("SC_CLK_TCK"))


def machine_busy_s(proc: Path = PROC) -> float:
    """Busy CPU seconds of every core since boot (``/proc/stat``: all but idle and iowait; guests are in user)."""
    fields = (proc / "stat").read_text().splitlines()[0].split()[1:]
    values = [int(x) for x in fields[:8]]
    idle = values[3] + values[4]
    return (sum(values) - idle) / _ticks()


def _stat(path: Path) -> tuple[int, float]:
    """Parent pid and user + system CPU seconds from one ``/proc/<pid>/stat`` file."""
    fields = path.read_text().rsplit(")", 1)[1].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / _ticks()


def _parents(proc: Path) -> dict[int, tuple[int, float]]:
    """Parent pid and CPU seconds of every process readable now, keyed by pid."""
    table: dict[int, tuple[int, float]] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            table[int(entry.name)] = _stat(entry / "stat")
        except (OSError, ValueError, IndexError):
            continue
    return table


def process_cpu_s(pid: int, proc: Path = PROC) -> float:
    """User + system CPU seconds of one process so far (0 once it is gone)."""
    try:
        return _stat(proc / str(pid) / "stat")[1]
    except OSError:
        return 0.0


def run_cpu_s(root: int | None = None, proc: Path = PROC) -> float:
    """CPU seconds used so far by process ``root`` (default: this one) and every live descendant of it."""
    root = os.getpid() if root is None else root
    table = _parents(proc)
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in table.items():
        children.setdefault(parent, []).append(pid)
    total, stack = 0.0, [root]
    while stack:
        pid = stack.pop()
        total += table.get(pid, (0, 0.0))[1]
        stack += children.get(pid, [])
    return total


def sample() -> CpuSample:
    """Take a :class:`CpuSample` now."""
    return CpuSample(time.monotonic(), machine_busy_s(), run_cpu_s())


def _cores(before: CpuSample, after: CpuSample, cpu_s: float) -> float:
    """``cpu_s`` CPU seconds spent between two samples, as cores kept busy (>= 0; 0 without elapsed time)."""
    wall = after.wall_s - before.wall_s
    return max(0.0, cpu_s / wall) if wall > 0 else 0.0


def outside_cores(before: CpuSample, after: CpuSample) -> float:
    """Cores kept busy by processes outside this run between two samples (>= 0)."""
    machine, run = after.machine_busy_s - before.machine_busy_s, after.run_s - before.run_s
    return _cores(before, after, machine - run)


def run_cores(before: CpuSample, after: CpuSample) -> float:
    """Cores kept busy by this run's own processes (load generator, servers, stubs) between two samples (>= 0)."""
    return _cores(before, after, after.run_s - before.run_s)


def busy(load: float | None, cores: int, fraction: float = BUSY_FRACTION) -> bool:
    """Whether ``load`` (cores busy outside the run, or a load average) exceeds ``fraction`` of the cores."""
    return load is not None and load > fraction * cores
