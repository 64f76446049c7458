"""Free local ports for the workers of a multi-worker test cluster (TF_CONFIG)."""

import socket


def free_ports(count: int) -> list:
    """`count` TCP ports on 127.0.0.1 that were free when asked (bound together, then closed)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()
