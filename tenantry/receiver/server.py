"""The :class:`Receiver`: OTLP/HTTP and OTLP/gRPC in one background event loop, landing through
one group-commit writer. ``tenantry collect`` is a thin CLI over it.

Example::

    with Receiver(Path("landing"), http_listen="127.0.0.1:0", grpc_listen=None) as r:
        post_to(f"http://127.0.0.1:{r.http_port}/v1/traces")
    # leaving the block flushed every accepted request into a segment
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import signal
import socket
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import uvicorn

from tenantry import landing as landing_lib
from tenantry.receiver import grpc as grpc_front
from tenantry.receiver import http as http_front
from tenantry.receiver.errors import ReceiverConfigError, ReceiverError
from tenantry.receiver.process import ChainLander, check_compression
from tenantry.receiver.writer import (
    DEFAULT_FLUSH_BYTES,
    DEFAULT_FLUSH_INTERVAL_S,
    DEFAULT_MAX_PENDING_BYTES,
    GroupCommitWriter,
)

logger = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 16 * 2**20
DEFAULT_HTTP_LISTEN = "127.0.0.1:4318"
DEFAULT_GRPC_LISTEN = "127.0.0.1:4317"


def parse_listen(addr: str, what: str, allow_remote: bool) -> tuple[str, int]:
    """``host:port`` (``[::1]:port`` for IPv6) -> (host, port). Fails closed: a host that is
    not loopback needs ``allow_remote=True``."""
    host, sep, port_s = addr.rpartition(":")
    if not sep or not host:
        raise ReceiverConfigError(f"{what}: {addr!r} is not host:port (e.g. 127.0.0.1:4318)")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        port = int(port_s)
        if not 0 <= port <= 65535:
            raise ValueError
    except ValueError:
        raise ReceiverConfigError(f"{what}: port {port_s!r} in {addr!r} is not 0-65535") from None
    if host == "localhost":
        loopback = True
    else:
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False  # a host name we cannot vouch for: treat it as remote
    if not loopback and not allow_remote:
        raise ReceiverConfigError(
            f"{what}: {host!r} is not a loopback address; the receiver only listens on 127.0.0.1 or ::1 "
            "unless you pass allow_remote=True (and put authentication/TLS in front of it)"
        )
    return host, port


class Receiver:
    """OTLP receiver landing accepted requests into ``landing`` (see the package docstring).

    ``http_listen`` / ``grpc_listen`` are ``host:port`` (port 0 picks a free port; the bound
    ports are ``http_port`` / ``grpc_port`` after :meth:`start`) or ``None`` to disable.
    ``chain`` (a collector_processors Processor, e.g. ``build_chain(config)``) makes the receiver
    decode every flush, run the chain on it (samplers excepted) and land *normalized* segments
    (:mod:`tenantry.receiver.process`); without it, raw segments land as received.
    ``compression`` (``"lz4"`` or ``"zstd"``, default none) compresses the segments' Arrow buffers
    (:data:`tenantry.landing.COMPRESSIONS` has the measured trade-off); readers need no option.
    """

    def __init__(
        self,
        landing: str | Path,
        http_listen: str | None = DEFAULT_HTTP_LISTEN,
        grpc_listen: str | None = DEFAULT_GRPC_LISTEN,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        flush_interval_s: float = DEFAULT_FLUSH_INTERVAL_S,
        flush_bytes: int = DEFAULT_FLUSH_BYTES,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
        allow_remote: bool = False,
        chain: Any = None,
        shutdown_timeout_s: float = 10.0,
        compression: str | None = None,
    ):
        if http_listen is None and grpc_listen is None:
            raise ReceiverConfigError("Receiver: both http_listen and grpc_listen are None; enable at least one")
        for name, value in (("max_body_bytes", max_body_bytes), ("flush_bytes", flush_bytes),
                            ("max_pending_bytes", max_pending_bytes), ("flush_interval_s", flush_interval_s)):
            if not value > 0:
                raise ReceiverConfigError(f"Receiver: {name} must be positive, got {value!r}")
        self.landing = Path(landing)
        self._http_addr = parse_listen(http_listen, "http_listen", allow_remote) if http_listen else None
        self._grpc_addr = parse_listen(grpc_listen, "grpc_listen", allow_remote) if grpc_listen else None
        self.max_body_bytes = max_body_bytes
        self.shutdown_timeout_s = shutdown_timeout_s
        check_compression(compression)
        # validated before anything else is built, so a bad chain fails at construction
        self.lander = ChainLander(chain, compression) if chain is not None else None
        write = self.lander
        if write is None and compression not in (None, "none"):
            write = functools.partial(landing_lib.write_segment, compression=compression)
        self.writer = GroupCommitWriter(self.landing, flush_interval_s, flush_bytes, max_pending_bytes,
                                        write_segment=write)
        self.http_port: int | None = None
        self.grpc_port: int | None = None
        self._counters: Counter = Counter()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._stop_requested: asyncio.Event | None = None
        self._stopped = False

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> "Receiver":
        """Start listening in a background thread; return once both listeners are bound."""
        if self._thread is not None:
            raise ReceiverError("Receiver.start(): already started")
        self.writer.start()
        self._thread = threading.Thread(target=self._thread_main, name="tenantry-receiver", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise ReceiverError(f"the receiver did not start listening within {timeout}s")
        if self._startup_error is not None:
            self._thread.join(timeout)
            self.writer.close()
            raise ReceiverError(f"the receiver could not start: {self._startup_error}") from self._startup_error
        logger.info("receiver listening: http=%s grpc=%s landing=%s", self.http_port, self.grpc_port, self.landing)
        return self

    def stop(self) -> dict[str, int]:
        """Stop listening, let in-flight requests finish, flush everything accepted; idempotent.
        Returns (and logs) the final :meth:`stats`."""
        if self._stopped:
            return self.stats()
        self._stopped = True
        self.writer.drain()
        if self._loop is not None and self._stop_requested is not None:
            self._loop.call_soon_threadsafe(self._stop_requested.set)
        if self._thread is not None:
            self._thread.join(self.shutdown_timeout_s + 5)
        self.writer.close()
        final = self.stats()
        logger.info("receiver stopped: %s", ", ".join(f"{k}={v}" for k, v in sorted(final.items())))
        return final

    def serve_forever(self) -> dict[str, int]:
        """Start, block until SIGINT or SIGTERM, then stop cleanly (call from the main thread)."""
        stop = threading.Event()
        previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.start()
            while not stop.wait(0.5):
                if self._thread is not None and not self._thread.is_alive():
                    logger.error("the receiver's server loop exited unexpectedly; shutting down")
                    break
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        return self.stop()

    def __enter__(self) -> "Receiver":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stats(self) -> dict[str, int]:
        """Counters: ``http_accepted``, ``http_status_<code>``, ``grpc_accepted``,
        ``grpc_status_<CODE>``, ``*_bytes_received``, ``segments_written``, ``records_written``,
        ``write_failures``, ``pending_requests`` ... and with a chain ``normalized_segments_written``,
        ``raw_fallbacks``, ``rows_{in,kept,quarantined}_<table>``."""
        out = dict(self._counters)
        out.update(self.writer.stats())
        if self.lander is not None:
            out.update(self.lander.stats())
        return out

    # -- the event loop thread -------------------------------------------------------------

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as e:  # report start-up failures to start(); log later ones
            if not self._ready.is_set():
                self._startup_error = e
            else:
                logger.exception("the receiver's server loop failed")
        finally:
            self._ready.set()
            loop.close()

    async def _serve(self) -> None:
        self._stop_requested = asyncio.Event()
        http_server = grpc_server = None
        http_task = None
        try:
            if self._grpc_addr is not None:
                grpc_server = grpc_front.build_server(self.writer, self.max_body_bytes, self._counters)
                host, port = self._grpc_addr
                target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
                self.grpc_port = grpc_server.add_insecure_port(target)
                if not self.grpc_port:
                    raise ReceiverError(f"gRPC could not bind {target} (in use?)")
                await grpc_server.start()
            if self._http_addr is not None:
                sock = self._bind_http(*self._http_addr)
                self.http_port = sock.getsockname()[1]
                app = http_front.build_app(self.writer, self.max_body_bytes, self._counters)
                config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off",
                                        loop="asyncio", timeout_graceful_shutdown=self.shutdown_timeout_s)
                http_server = uvicorn.Server(config)
                http_task = asyncio.ensure_future(http_server.serve(sockets=[sock]))
                while not http_server.started and not http_task.done():
                    await asyncio.sleep(0.005)
                if http_task.done():
                    http_task.result()
                    raise ReceiverError("the HTTP server exited during start-up")
            self._ready.set()
            await self._stop_requested.wait()
        finally:
            # Stop taking new requests; in-flight ones finish (their writes keep flowing)
            if http_server is not None and http_task is not None:
                http_server.should_exit = True
                await asyncio.wait([http_task], timeout=self.shutdown_timeout_s + 1)
            if grpc_server is not None:
                await grpc_server.stop(self.shutdown_timeout_s)

    @staticmethod
    def _bind_http(host: str, port: int) -> socket.socket:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on accepted sockets whose
        # proto says TCP, and without it Nagle + delayed ACK add ~40 ms to every keep-alive reply
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.bind((host, port))
        except OSError as e:
            sock.close()
            raise ReceiverError(f"http_listen: cannot bind {host}:{port}: {e}") from None
        sock.listen(1024)
        sock.setblocking(False)
        return sock
