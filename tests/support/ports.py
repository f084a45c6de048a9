"""Free loopback ports for the services a test starts of its own."""

from __future__ import annotations

import socket

SHARED_BROKER_PORTS = (9092, 9093)  # the plain broker scripts/kafka-local starts by default: never taken


def free_port_pair() -> int:
    """A port P on 127.0.0.1 such that P and P + 1 (a broker's listener and its controller) are both free now."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port >= 65535 or port in SHARED_BROKER_PORTS:
            continue
        try:
            with socket.socket() as first, socket.socket() as second:
                first.bind(("127.0.0.1", port))
                second.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise RuntimeError("no free pair of adjacent ports on 127.0.0.1")
