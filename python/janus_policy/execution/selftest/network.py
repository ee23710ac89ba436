"""Network checks: no route out, not even to the host's own loopback, abstract
sockets or DNS; no raw sockets; only lo in the network namespace."""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterator
from contextlib import contextmanager

from janus_policy.execution.selftest.battery import (
    Battery,
    Verdict,
    _errno_of,
    _name,
    _perl,
    _poll,
    _results,
    _show,
    probe,
)


@contextmanager
def _listener(family: int, address: str | tuple[str, int]) -> Iterator[socket.socket]:
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.bind(address)
        s.listen(16)
        yield s
    finally:
        s.close()


def _pending(server: socket.socket) -> int:
    """Connections the kernel completed for `server` (accepted here, then closed)."""
    server.setblocking(False)
    n = 0
    while True:
        try:
            conn, _ = server.accept()
        except BlockingIOError:
            return n
        conn.close()
        n += 1


def _self_connect(server: socket.socket) -> bool:
    """The host itself can reach `server`: the listener is real."""
    with socket.socket(server.family, socket.SOCK_STREAM) as c:
        c.settimeout(2)
        c.connect(server.getsockname())
    return _poll(lambda: _pending(server) == 1, 2.0)


def check_egress_ip(b: Battery) -> Verdict:
    o = b.run(_perl("egress_ip.pl"))
    res = _results(o)
    ok = (
        len(res) == 2
        and all(v.startswith("errno=") for v in res.values())
        and b"HUNG" not in o.stdout
    )
    return ok, ", ".join(f"{k}: {_name(_errno_of(v))}" for k, v in res.items()) or _show(o)


def check_loopback(b: Battery) -> Verdict:
    with _listener(socket.AF_INET, ("127.0.0.1", 0)) as server:
        if not _self_connect(server):
            return False, "the host could not reach its own test listener"
        port = server.getsockname()[1]
        o = b.run(_perl("loopback.pl", str(port)))
        reached = _pending(server)
    res = _results(o)
    failed = len(res) == 1 and all(v.startswith("errno=") for v in res.values())
    return failed and reached == 0, (
        f"host listener 127.0.0.1:{port}; sandbox: "
        + ", ".join(f"{k} {_name(_errno_of(v))}" for k, v in res.items())
        + f"; connections that reached the host listener: {reached}"
    )


def check_abstract_unix(b: Battery) -> Verdict:
    name = f"janus-selftest-{secrets.token_hex(8)}"
    with _listener(socket.AF_UNIX, "\0" + name) as server:
        if not _self_connect(server):
            return False, "the host could not reach its own abstract socket"
        o = b.run(_perl("abstract_unix.pl", name))
        reached = _pending(server)
    res = _results(o)
    failed = bool(res) and all(v.startswith("errno=") for v in res.values())
    return failed and reached == 0, (
        f"abstract socket @{name}; sandbox: "
        + ", ".join(f"{k} {_name(_errno_of(v))}" for k, v in res.items())
        + f"; connections that reached the host: {reached}"
    )


def check_dns(b: Battery) -> Verdict:
    o = b.run(["getent", "hosts", "example.com"])
    return o.exit_code != 0 and not o.stdout.strip(), _show(o)


def check_raw_socket(b: Battery) -> Verdict:
    o = b.run(_perl("raw_socket.pl"))
    res = _results(o)
    ok = len(res) == 5 and all(v.startswith("errno=") for v in res.values())
    return ok, ", ".join(f"{k}: {_name(_errno_of(v))}" for k, v in res.items()) or _show(o)


def check_dev_tcp(b: Battery) -> Verdict:
    with _listener(socket.AF_INET, ("127.0.0.1", 0)) as server:
        if not _self_connect(server):
            return False, "the host could not reach its own test listener"
        o = b.run(["bash", "-c", probe("dev_tcp.sh"), "bash", str(server.getsockname()[1])])
        reached = _pending(server)
    out = o.stdout.decode(errors="replace")
    ok = o.limit == "none" and out.count("refused") == 2 and "CONNECTED" not in out
    return ok and reached == 0, f"{_show(o)}; connections that reached the host: {reached}"


def check_only_lo(b: Battery) -> Verdict:
    o = b.run(["cat", "/proc/net/dev"])
    lines = o.stdout.decode(errors="replace").splitlines()[2:]
    names = {ln.split(":", 1)[0].strip() for ln in lines if ":" in ln}
    ok = o.exit_code == 0 and names == {"lo"}
    detail = f"/proc/net/dev: {sorted(names)}"
    ip = next(
        (p for p in ("/usr/sbin/ip", "/usr/bin/ip", "/sbin/ip") if os.access(p, os.X_OK)), None
    )
    if ip:
        # Netlink belongs to the network: without it, ip(8) cannot even ask.
        o2 = b.run([ip, "-o", "link", "show"])
        ok = ok and o2.exit_code != 0 and not o2.stdout
        detail += f"; {ip} link (netlink refused): {_show(o2)}"
    else:
        detail += "; no ip(8) on this host"
    return ok, detail
