"""Where a server listens: a host resolved to the number tritonserver takes, a port checked before the start, and free
ports for tests and benchmarks."""

from __future__ import annotations

import errno
import socket

from resnet_deploy.runtime.errors import ResnetDeployError, quote


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """`n` distinct ports the OS says are free on `host` now (for tests and benchmarks that start a server)."""
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind((host, 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def listen_address(host: str) -> str:
    """The numeric address `host` names (a name is resolved once, here: tritonserver's HTTP front end takes only
    numbers); ResnetDeployError when it names none."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as e:
        why = e.strerror if isinstance(e, socket.gaierror) else "not a host name"
        raise ResnetDeployError(f"cannot resolve --host {quote(host)} ({why}); give an address of this machine, "
                                "e.g. 127.0.0.1 (this machine only) or 0.0.0.0 (every network)") from None
    return str(infos[0][4][0])


def check_port(host: str, port: int) -> None:
    """Refuse a port that something already listens on, or an address that is not this machine's (tritonserver
    would fail later with a long log)."""
    address = listen_address(host)
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        # SO_REUSEADDR as servers set it: connections of an earlier run in TIME_WAIT do not count as "in use".
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((address, port))
        except OSError as e:
            where = f"[{address}]:{port}" if family == socket.AF_INET6 else f"{address}:{port}"
            fix = {errno.EADDRINUSE: "something listens there already; choose another port",
                   errno.EADDRNOTAVAIL: "that address is not one of this machine's; choose another --host",
                   errno.EACCES: "ports below 1024 need more rights; choose a port above 1023"}.get(
                       e.errno, "choose another --host or port")
            raise ResnetDeployError(f"cannot listen on {where} ({e.strerror}): {fix}") from None
