"""systemd's notify protocol (sd_notify(3)): datagrams of `KEY=value` lines to
the socket named by $NOTIFY_SOCKET. Written out rather than taken from a
library because it is one sendto() and the daemon must never fail on it: a
missing or broken socket only turns notifications off."""

from __future__ import annotations

import os
import socket
import time


class Notifier:
    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self._sock: socket.socket | None = None
        self._address = address
        if address:
            # A leading @ names a socket in the abstract namespace.
            self._address = "\0" + address[1:] if address.startswith("@") else address
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        #: Ping at half the watchdog period, as systemd recommends.
        self.watchdog_interval_s = watchdog_usec / 2e6 if watchdog_usec else None
        self._last_ping = 0.0

    @classmethod
    def from_env(cls) -> Notifier:
        usec = os.environ.get("WATCHDOG_USEC", "")
        pid = os.environ.get("WATCHDOG_PID", "")
        mine = not pid or pid == str(os.getpid())
        return cls(
            os.environ.get("NOTIFY_SOCKET"),
            int(usec) if usec.isdigit() and mine else None,
        )

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, **fields: str) -> bool:
        if self._sock is None or self._address is None:
            return False
        message = "\n".join(f"{k.upper()}={v}" for k, v in fields.items())
        try:
            self._sock.sendto(message.encode(), self._address)
        except OSError:
            return False
        return True

    def ready(self, status: str) -> None:
        self.send(ready="1", status=status, mainpid=str(os.getpid()))

    def status(self, status: str) -> None:
        self.send(status=status)

    def watchdog(self) -> None:
        """A keep-alive, at most every half watchdog period."""
        now = time.monotonic()
        if self.watchdog_interval_s and now - self._last_ping >= self.watchdog_interval_s:
            self._last_ping = now
            self.send(watchdog="1")

    def reloading(self) -> None:
        self.send(reloading="1")

    def stopping(self) -> None:
        self.send(stopping="1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
