"""Close a running tritonserver's front door: shut down its listening sockets and client connections.

Triton 2.51 answers NOT_FOUND for a model from the moment its unload starts until the process exits (about a
second for a Python-backend model), and cancels in-flight RPCs when it stops its gRPC server, so a client that
sends during the last second of a shutdown is told the model does not exist. After a drain has finished every
accepted request, :func:`close_front_door` takes the server's sockets on the given ports out of its hands
(``pidfd_getfd(2)``, Linux >= 5.6, allowed for a parent on its own child) and shuts them down: new connections
are refused and open ones are closed, which every gRPC and HTTP client reports as UNAVAILABLE (retry
elsewhere). Triton then stops with nobody able to reach it.

The HTTP listener itself is left open (``keep_listening``): Triton's HTTP server (libevent) then spins on accept()
failing with EINVAL until the process exits, and Triton 2.51 once crashed with SIGSEGV while stopping that server
in CI on an AMD EPYC (after a complete drain, nothing lost, but exit code -11). Its open
connections are still closed; a new HTTP connection in the last second reaches Triton as before.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import socket
from collections.abc import Iterable
from pathlib import Path

LOGGER = logging.getLogger(__name__)

SYS_PIDFD_GETFD = 438  # the same number on x86_64 and aarch64
TCP_TABLES = ("net/tcp", "net/tcp6")
TCP_LISTEN = "0A"  # the ``st`` column of /proc/net/tcp for a listening socket


def socket_inodes(pid: int, ports: Iterable[int], listeners: bool = True) -> set[int]:
    """Inodes of the TCP sockets in ``pid``'s network namespace whose local port is one of ``ports``.

    Args:
        pid: the process whose ``/proc/<pid>/net/tcp*`` tables are read.
        ports: local ports (listeners and the connections accepted on them).
        listeners: whether listening sockets count (False: only connections).

    Returns:
        The socket inodes (``/proc/<pid>/fd`` links read ``socket:[<inode>]``).
    """
    wanted = set(ports)
    inodes: set[int] = set()
    for table in TCP_TABLES:
        try:
            lines = (Path("/proc") / str(pid) / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            port_matches = len(fields) > 9 and int(fields[1].rsplit(":", 1)[1], 16) in wanted
            if port_matches and (listeners or fields[3] != TCP_LISTEN):
                inodes.add(int(fields[9]))
    return inodes


def socket_fds(pid: int, inodes: set[int]) -> list[int]:
    """``pid``'s file descriptors that are one of the sockets ``inodes``."""
    fds = []
    for link in (Path("/proc") / str(pid) / "fd").iterdir():
        try:
            target = os.readlink(link)
        except OSError:
            continue
        if target.startswith("socket:[") and int(target[8:-1]) in inodes:
            fds.append(int(link.name))
    return sorted(fds)


def _shutdown_remote(libc: ctypes.CDLL, pidfd: int, fd: int) -> None:
    local = libc.syscall(SYS_PIDFD_GETFD, pidfd, fd, 0)
    if local < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"pidfd_getfd({fd}): {os.strerror(errno)}")
    try:
        sock = socket.socket(fileno=local)
    except OSError:
        os.close(local)
        raise
    with sock, contextlib.suppress(OSError):  # OSError: already closed by the peer, nothing to shut
        sock.shutdown(socket.SHUT_RDWR)


def close_front_door(pid: int, ports: Iterable[int], keep_listening: Iterable[int] = ()) -> int:
    """Shut down every socket of ``pid`` on ``ports``: its listeners refuse, its open connections close.

    Args:
        pid: a child process of this one (``pidfd_getfd`` needs ptrace rights on it).
        ports: the ports to close (the server's HTTP and gRPC ports; leave metrics open if it is scraped).
        keep_listening: ports among ``ports`` whose listener stays open (only their connections are closed).

    Returns:
        How many sockets were shut down.

    Raises:
        OSError: if the kernel refuses (no ``pidfd_getfd``, no ptrace rights, the process is gone).
    """
    ports, kept = set(ports), set(keep_listening)
    inodes = socket_inodes(pid, ports - kept) | socket_inodes(pid, ports & kept, listeners=False)
    fds = socket_fds(pid, inodes)
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    try:
        for fd in fds:
            _shutdown_remote(libc, pidfd, fd)
    finally:
        os.close(pidfd)
    LOGGER.info("front door closed: %d socket(s) of pid %d on ports %s shut down", len(fds), pid, sorted(ports))
    return len(fds)
