"""A watchdog process that stops a tritonserver when the process that started it dies, however it dies.

:class:`~trimodal.triton.server.TritonServer` starts one per server, in a session of its own (Ctrl-C in the
terminal does not reach it), with the read end of a pipe as its standard input; the parent keeps the write
end. When the parent exits for any reason (including SIGKILL or the OOM killer), the kernel closes the write
end, the watchdog reads end-of-file, and it stops the server: SIGTERM to tritonserver, then after
``grace_s`` SIGKILL to the server's whole process group (the Python stubs), then it removes the server's
``/dev/shm`` segments. A parent that stopped the server itself writes :data:`STOPPED` before closing the
pipe, and the watchdog exits without touching anything (the pid may already belong to someone else).

Internal: started as ``python -m trimodal.triton.watchdog PID SHM_PREFIX GRACE_S``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from pathlib import Path

SHM_DIR = Path("/dev/shm")
STOPPED = b"stopped\n"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    with contextlib.suppress(OSError, IndexError):
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def reap(pid: int, shm_prefix: str, grace_s: float) -> None:
    """Stop the server ``pid`` (its process group too) and remove its shared-memory segments.

    Args:
        pid: the tritonserver pid (also its process group id).
        shm_prefix: prefix of its ``/dev/shm`` segments.
        grace_s: seconds between SIGTERM and SIGKILL.
    """
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    if shm_prefix:
        for segment in SHM_DIR.glob(f"{shm_prefix}*"):
            with contextlib.suppress(OSError):
                segment.unlink()


def main(argv: list[str]) -> int:
    """Wait for end-of-file on stdin, then reap the server. Returns the exit status."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    pid, shm_prefix, grace_s = int(argv[0]), argv[1], float(argv[2])
    received = b""
    while chunk := sys.stdin.buffer.read(4096):
        received += chunk
    if STOPPED not in received:
        reap(pid, shm_prefix, grace_s)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
