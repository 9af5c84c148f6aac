"""Closing a child's front door: its listener refuses new connections and its open connections are closed."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from trimodal.triton.frontdoor import close_front_door, socket_fds, socket_inodes

CHILD = """
import socket, sys, time
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen()
other = socket.socket()
other.bind(("127.0.0.1", 0))
other.listen()
print(listener.getsockname()[1], other.getsockname()[1], flush=True)
accepted = listener.accept()[0]
print("accepted", flush=True)
time.sleep(30)
"""


@pytest.fixture()
def child() -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True)
    yield process
    process.kill()
    process.wait(timeout=10)


def test_listener_refuses_and_open_connection_closes_other_port_untouched(child: subprocess.Popen) -> None:
    port, other_port = map(int, child.stdout.readline().split())
    client = socket.create_connection(("127.0.0.1", port), timeout=5)
    assert child.stdout.readline().strip() == "accepted"
    assert len(socket_fds(child.pid, socket_inodes(child.pid, [port]))) == 2  # the listener and the accepted one

    closed = close_front_door(child.pid, [port])

    assert closed == 2
    client.settimeout(5)
    assert client.recv(1) == b"", "the open connection was not closed"
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5)
    socket.create_connection(("127.0.0.1", other_port), timeout=5).close()  # a port not named stays open
    assert child.poll() is None, "the process itself must keep running"


def test_a_kept_listener_accepts_while_its_open_connection_closes(child: subprocess.Popen) -> None:
    port, _ = map(int, child.stdout.readline().split())
    client = socket.create_connection(("127.0.0.1", port), timeout=5)
    assert child.stdout.readline().strip() == "accepted"

    closed = close_front_door(child.pid, [port], keep_listening=[port])

    assert closed == 1
    client.settimeout(5)
    assert client.recv(1) == b"", "the open connection was not closed"
    socket.create_connection(("127.0.0.1", port), timeout=5).close()  # the listener still takes connections
    assert child.poll() is None, "the process itself must keep running"


def test_a_process_that_is_gone_is_an_os_error() -> None:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait(timeout=10)
    with pytest.raises(OSError):
        close_front_door(process.pid, [1])
