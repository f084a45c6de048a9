"""Free loopback ports for the services a test starts of its own."""

from __future__ import annotations

import socket


def free_port_pair() -> int:
    """A port P such that P and P + 1 are both free now (a broker's listener and its controller)."""
    while True:
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
        with socket.socket() as b:
            try:
                b.bind(("127.0.0.1", port + 1))
                return port
            except OSError:
                continue
