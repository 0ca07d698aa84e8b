"""systemd's notify protocol (sd_notify(3)): one datagram per message to $NOTIFY_SOCKET.

Written out rather than taken from a library: the protocol is a dozen lines, and the
Python packages for it are either unmaintained (sdnotify) or need libsystemd to build.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


class Notifier:
    """Tells systemd we are ready, alive and what we are doing; silent outside systemd."""

    def __init__(self, environ: Mapping[str, str] = os.environ) -> None:
        address = environ.get("NOTIFY_SOCKET", "")
        # A leading "@" names a socket in the abstract namespace.
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self._socket: socket.socket | None = None
        if self._address:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._socket.setblocking(False)  # a busy or stuck systemd must never stall us
        usec, pid = environ.get("WATCHDOG_USEC", ""), environ.get("WATCHDOG_PID", "")
        mine = not pid or pid == str(os.getpid())
        self.watchdog_interval = int(usec) / 1e6 if usec.isdigit() and mine else None

    def notify(self, *fields: str) -> None:
        if self._socket is None:
            return
        try:
            self._socket.sendto("\n".join(fields).encode(), self._address)
        except OSError as exc:  # systemd gone or its queue full: drop the message
            log.debug("sd_notify failed: %s", exc)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
