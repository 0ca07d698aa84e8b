"""uvicorn in a thread of `tagger watch`: one worker in the daemon's process, so the web page
shares its store, its one writer and its loaded model."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import threading
import time

import uvicorn
from starlette.applications import Starlette
from uvicorn.protocols.http.h11_impl import H11Protocol

from tagger.errors import ConfigError, TaggerError

log = logging.getLogger(__name__)
_START_TIMEOUT_S = 30
MAX_CONNECTIONS = 256  # open at once; beyond, a new one is closed at once
MAX_REQUESTS = 64  # in progress at once; beyond, 503 (uvicorn's limit_concurrency)
FIRST_REQUEST_S = 10.0  # a connection must send its request headers within this


class _GuardedH11(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, made to drop connections that take file handles and do
    nothing: beyond MAX_CONNECTIONS, or silent (or dribbling headers) for FIRST_REQUEST_S."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > MAX_CONNECTIONS:
            transport.close()
            return
        self.loop.call_later(FIRST_REQUEST_S, self._close_if_no_request)

    def _close_if_no_request(self) -> None:
        if self.cycle is None and not self.transport.is_closing():
            self.transport.close()


def more_file_handles(wanted: int = 65536) -> None:
    """Raise this process's open-files limit towards its hard limit: each connection,
    photo and thumbnail being read takes a handle, and 1024 is a common default."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        if soft < target:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ImportError, OSError, ValueError) as exc:
        log.debug("open-files limit unchanged: %s", exc)


def parse_listen(listen: str) -> tuple[str, int]:
    """`web.listen` as (host, port): a bare port means loopback only."""
    text = listen.strip()
    host, _, port = text.rpartition(":") if ":" in text else ("127.0.0.1", "", text)
    host = host.strip("[]") or "0.0.0.0"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"web.listen {listen!r}: give PORT or HOST:PORT, e.g. 0.0.0.0:8080")
    return host, int(port)


def loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _RequestsCutShort(logging.Filter):
    """At shutdown uvicorn cancels requests still running after the grace period (a client
    stuck mid-upload) and logs each as a crash with a traceback; it is one line here."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().startswith("Cancel "):  # "Cancel 1 running task(s), ..."
            return False
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, asyncio.CancelledError) or isinstance(
            getattr(error, "__context__", None), asyncio.CancelledError
        ):
            log.warning("stopped a request still running at shutdown")
            return False
        return True


class WebServer:
    """Started before the daemon's reconcile, stopped after its pipeline; requests in flight
    get a few seconds to finish."""

    def __init__(self, app: Starlette, host: str, port: int) -> None:
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            lifespan="off",
            log_level="warning",
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=5,
            timeout_keep_alive=5,
            limit_concurrency=MAX_REQUESTS,
            http=_GuardedH11,
            workers=1,
        )
        self._server = uvicorn.Server(config)
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, name="tagger-web", daemon=True)
        self.address = f"http://{'[' + host + ']' if ':' in host else host}:{port}"

    def _serve(self) -> None:
        try:
            self._server.run()
        except BaseException as exc:  # uvicorn exits (SystemExit) when it cannot bind
            self._failure = exc

    def start(self) -> None:
        more_file_handles()
        self._thread.start()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise TaggerError(
                    f"cannot listen on {self.address}: the address is in use or not this "
                    "machine's (see the log above)"
                )
            time.sleep(0.02)
        log.info("web page and API at %s", self.address)

    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        logging.getLogger("uvicorn.error").addFilter(_RequestsCutShort())
        self._server.should_exit = True
        self._thread.join(timeout=15)
