"""Free TCP ports on the loopback interface for test servers.

Every server the test suite starts (Orthanc, dcmqrscp, fault peers) gets its own
port so that parallel runs, a leftover lab instance on the well-known ports
(4242, 8042, 11112 ...) or a CI runner with other services never collide.
"""

from __future__ import annotations

import socket
import threading

_lock = threading.Lock()
# Ports already handed out in this process. The kernel may hand the same
# ephemeral port to two bind(0) calls in a row once the first socket is closed;
# remembering them avoids giving two servers of one session the same port.
_issued: set[int] = set()


def free_port() -> int:
    """Return a TCP port that nothing listens on right now, on any interface.

    Binding the wildcard address (not just 127.0.0.1) matters because Orthanc
    1.10.1 cannot bind a single interface: it always listens on 0.0.0.0, so a
    port merely free on loopback could still fail for it. There is an unavoidable
    window between this check and the server's own bind; servers therefore
    report a clear error when their bind fails, and the harness does not retry
    silently.
    """
    with _lock:
        for _ in range(100):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("", 0))
                port = int(s.getsockname()[1])
            if port not in _issued:
                _issued.add(port)
                return port
    raise RuntimeError("could not find a free TCP port after 100 attempts")


def port_is_open(host: str, port: int, timeout: float = 0.2) -> bool:
    """True if a TCP connection to host:port is accepted (someone listens)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


__all__ = ["free_port", "port_is_open"]
