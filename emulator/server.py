"""The HTTP server: one thread per keep-alive connection, running each request through IMS's stages.

Stages, in order (the first failure answers): body size, the request path, common header
parameters, authentication (TC3, or a private deployment's bearer token or none), the per-SecretId
rate limit, parameter and image validation, then moderation, where faults may be injected and the
configured latency is spent. With an `ssl.SSLContext` it serves HTTPS, and refuses at the handshake a
client the context does not accept (no client certificate when one is required, or an untrusted one).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import socket
import socketserver
import ssl
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from . import auth, connection, hostile, results
from .config import EmulatorConfig
from .errors import ImsError
from .faults import Fault, Faults
from .headers import check_common_parameters
from .ink import find_ink
from .marker import find_hits
from .ratelimit import SlidingWindowLimiter
from .stats import Stats
from .validation import parse_json_object, validate

log = logging.getLogger("ims_emulator")

MAX_BODY_BYTES = 10 * 1024 * 1024
# An oversized body up to this size is read and dropped so the connection survives the error;
# anything larger is answered without reading it, and the connection closed.
_MAX_DRAINED_BYTES = 64 * 1024 * 1024
_DRAIN_CHUNK = 1024 * 1024
_BAD_GATEWAY = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n"
    b"<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n"
)


class _ClientGone(Exception):
    """The client closed the connection before its request was complete."""


def _too_large(size: int) -> ImsError:
    return ImsError(
        "RequestSizeLimitExceeded",
        f"The request body is {size} bytes, more than the limit of {MAX_BODY_BYTES} bytes.",
    )


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ims-emulator"
    sys_version = ""
    server: _Server

    @property
    def emulator(self) -> ImsEmulator:
        return self.server.emulator

    def setup(self) -> None:
        # Without TCP_NODELAY a response written in two parts waits for the client's delayed ACK
        # (~40 ms on Linux), which would swamp the latencies the benchmarks measure.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().setup()
        self.emulator._track(self.connection)

    def handle(self) -> None:
        # The TLS handshake runs here, on the connection's own thread, so a slow or refused client
        # never holds up the accept loop.
        if isinstance(self.connection, ssl.SSLSocket) and not self._handshake(self.connection):
            return
        super().handle()

    def _handshake(self, sock: ssl.SSLSocket) -> bool:
        try:
            sock.do_handshake()
        except OSError as error:  # ssl.SSLError included
            log.debug("TLS handshake with %s failed: %s", self.address_string(), error)
            connection.linger(sock)
            return False
        return True

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.emulator._untrack(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    # --- HTTP methods ----------------------------------------------------------------------------

    def do_POST(self) -> None:
        self.emulator.stats.record_request()
        try:
            self._serve()
        except ImsError as error:
            self._send_error(error)
        except _ClientGone:
            self.close_connection = True
            self.emulator.stats.record_aborted()
        except Exception:
            log.exception("ims-emulator failed on a request")
            self._send_error(ImsError("InternalError", "ims-emulator: unexpected failure, see its log."))

    def parse_request(self) -> bool:
        # The request line has just been read: the request's arrival, before any of our own work on it
        # (arrival_stamp "request-line"; "after-body" stamps again in _serve).
        self._arrived = time.monotonic()
        return super().parse_request()

    def _unsupported_method(self) -> None:
        self.emulator.stats.record_request()
        # Any body is left unread, so the connection cannot carry another request.
        self.close_connection = True
        self._send_error(ImsError("UnsupportedProtocol", f"The HTTP method {self.command} is not supported."))

    do_GET = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _unsupported_method

    # --- the stages ------------------------------------------------------------------------------

    def _serve(self) -> None:
        emulator = self.emulator
        config = emulator.config
        body = self._read_body()
        if config.arrival_stamp == "after-body":
            # A loaded front end: the stamp waits for the whole body and for this thread's turn.
            self._arrived = time.monotonic()
        path = urlsplit(self.path).path
        if path != config.path:
            self._send(404, "text/plain", f"No such path: {path}\n".encode())
            return
        params = parse_json_object(body)
        if params is not None:
            emulator.stats.record_received(time.time(), params)
        check_common_parameters(self.headers, config.regions)
        secret_id = auth.authenticate(self.headers, body=body, path=path, config=config, now=time.time())
        emulator.stats.record_authenticated(secret_id)
        # IMS judges the limit by when a request arrives: on the socket, plus the simulated network
        # delay; how long this thread took to parse and verify it is no part of that.
        arrival = self._arrived + random.uniform(0.0, config.arrival_jitter)
        time.sleep(max(0.0, arrival - time.monotonic()))
        emulator.stats.record_arrival(arrival, self.client_address[1])
        emulator._admit(secret_id, config.qps_limit, arrival)
        subject = validate(params, config)
        hits = find_hits(subject.image) + (find_ink(subject.image) if config.read_ink else [])
        fault = emulator._draw_fault(config.faults)
        if fault is not None:
            emulator.stats.record_fault(fault.kind)
            self._reject_if_rate_limit(fault, secret_id, config.qps_limit)
        emulator.stats.record_billed()
        try:
            hang = fault is not None and fault.kind == "hang"
            latency = math.inf if hang else config.latency + random.uniform(0.0, config.latency_jitter)
            if not self._wait(latency):
                return
            if fault is not None and (error := fault.error()) is not None:
                raise error
            answer = {"Response": {**results.build(subject, hits), "RequestId": str(uuid.uuid4())}}
            if config.hostile:
                self._answer_hostilely(config, answer)
            elif fault is None:
                self._send_json(answer)
            else:
                self._inject_transport_fault(fault, answer)
        finally:
            emulator.stats.record_finished()

    def _reject_if_rate_limit(self, fault: Fault, secret_id: str, qps_limit: int | None) -> None:
        """Rate limiting happens in front of moderation: such a fault is answered at once, unbilled."""
        if fault.kind == "rate_limit_burst":
            raise self.emulator._injected_rate_limit(secret_id, qps_limit)
        error = fault.error()
        if error is not None and error.is_rate_limit:
            raise error

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked()
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            raise ImsError("InvalidParameter", "The Content-Length header is invalid.")
        if length > MAX_BODY_BYTES:
            if length <= _MAX_DRAINED_BYTES:
                self._discard(length)
            else:
                self.close_connection = True
            raise _too_large(length)
        body = self.rfile.read(length)
        if len(body) < length:
            raise _ClientGone
        return body

    def _discard(self, length: int) -> None:
        while length > 0:
            chunk = self.rfile.read(min(length, _DRAIN_CHUNK))
            if not chunk:
                raise _ClientGone
            length -= len(chunk)

    def _read_chunked(self) -> bytes:
        body = bytearray()
        while True:
            line = self.rfile.readline(1024)
            if not line:
                raise _ClientGone
            try:
                size = int(line.split(b";", 1)[0], 16)
            except ValueError:
                self.close_connection = True
                raise ImsError("InvalidParameter", "The chunked request body is malformed.") from None
            if size == 0:
                # Skip any trailer fields up to the blank line that ends the message.
                while self.rfile.readline(65537).strip():
                    pass
                return bytes(body)
            if len(body) + size > MAX_BODY_BYTES:
                self.close_connection = True
                raise _too_large(len(body) + size)
            chunk = self.rfile.read(size)
            self.rfile.readline()  # the CRLF after the chunk
            if len(chunk) < size:
                raise _ClientGone
            body += chunk

    def _wait(self, seconds: float) -> bool:
        """Spend `seconds` (math.inf: hang) before answering; False if the client left or the server stops."""
        if seconds <= 0:
            return True
        outcome = connection.wait(self.connection, seconds, self.emulator._stopping)
        if outcome is connection.Waited.ELAPSED:
            return True
        self.close_connection = True
        if outcome is connection.Waited.PEER_CLOSED:
            self.emulator.stats.record_aborted()
        return False

    def _inject_transport_fault(self, fault: Fault, answer: dict[str, Any]) -> None:
        if fault.kind == "http_5xx":
            self._send(502, "text/html", _BAD_GATEWAY)
        elif fault.kind == "malformed_json":
            text = json.dumps(answer).encode()
            self._send(200, "application/json", text[: len(text) // 2])
        else:  # connection_reset
            self.close_connection = True
            connection.reset(self.connection)

    def _answer_hostilely(self, config: EmulatorConfig, answer: dict[str, Any]) -> None:
        headers = {name.lower(): value for name, value in self.headers.items()}
        if config.hostile == "echo_headers":
            self._send(200, "application/json", hostile.encoded(hostile.echo_error(headers)))
        elif config.hostile == "echo_headers_result":
            self._send(200, "application/json", hostile.encoded(hostile.echo_result(answer, headers)))
        elif config.hostile == "deep_json":
            self._send(200, "application/json", hostile.deep_json())
        elif config.hostile == "huge_body":
            self._stream(hostile.huge_body(config.hostile_body_bytes), length=None)
        else:  # slow_drip
            body = hostile.encoded(answer)
            drops = (body[i : i + 1] for i in range(len(body)))
            self._stream(drops, length=len(body), pause=config.drip_interval)

    def _stream(self, chunks: Iterator[bytes], *, length: int | None, pause: float = 0.0) -> None:
        """A 200 written chunk by chunk (read until close when `length` is None), until the client leaves."""
        self.close_connection = True
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            if length is not None:
                self.send_header("Content-Length", str(length))
            self.send_header("Connection", "close")
            self.end_headers()
            for chunk in chunks:
                self.wfile.write(chunk)
                self.wfile.flush()
                if pause and not self._wait(pause):
                    return
        except ConnectionError:
            self.emulator.stats.record_aborted()

    # --- answering -------------------------------------------------------------------------------

    def _send_error(self, error: ImsError) -> None:
        log.debug("answering %s: %s", error.code, error.message)
        self.emulator.stats.record_error(error.code, rate_limited=error.is_rate_limit)
        error_body = {"Code": error.code, "Message": error.message}
        self._send_json({"Response": {"Error": error_body, "RequestId": str(uuid.uuid4())}})

    def _send_json(self, answer: dict[str, Any]) -> None:
        self._send(200, "application/json", json.dumps(answer, ensure_ascii=False).encode())

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
        except ConnectionError:
            self.close_connection = True
            self.emulator.stats.record_aborted()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # The default backlog of 5 drops connections when a benchmark opens a hundred at once.
    request_queue_size = 1024

    def __init__(
        self, host: str, port: int, emulator: ImsEmulator, ssl_context: ssl.SSLContext | None
    ) -> None:
        self.emulator = emulator
        self.ssl_context = ssl_context
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host, port), _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        if self.ssl_context is None:
            return sock, address
        # No handshake yet: it would block the accept loop (see _Handler.handle).
        return self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), address

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name with getfqdn, a DNS lookup we do not need.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError | ssl.SSLError):
            log.debug("connection from %s lost: %s", client_address, error)
        else:
            log.exception("unexpected error on the connection from %s", client_address)


class ImsEmulator:
    """A loopback HTTP server that answers Tencent Cloud IMS `ImageModeration` (2020-12-29) calls."""

    def __init__(
        self,
        config: EmulatorConfig,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """With `ssl_context` (server side) it serves HTTPS; its `verify_mode` says whether a client
        certificate is required (CERT_REQUIRED), checked if sent (CERT_OPTIONAL) or not asked for."""
        self.config = config
        self._ssl_context = ssl_context
        self.stats = Stats()
        self._host = host
        self._requested_port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        # Serialises admission (rate limit and window statistics) and fault draws, so scripted
        # faults are consumed in arrival order.
        self._admission = threading.Lock()
        self._limiter = SlidingWindowLimiter()
        self._connections: set[socket.socket] = set()
        self._connections_changed = threading.Condition()

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> ImsEmulator:
        """Bind, listen and serve in a background thread; connections are accepted once this returns."""
        if self._server is not None:
            raise RuntimeError("the emulator was already started")
        self._server = _Server(self._host, self._requested_port, self, self._ssl_context)
        # stop() waits for the accept loop to see the shutdown flag, once per poll interval: a short
        # interval keeps the per-test teardown small at the cost of ~100 idle wake-ups a second.
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.01},
            name="ims-emulator",
            daemon=True,
        )
        self._thread.start()
        log.info("ims-emulator listening on %s", self.url)
        return self

    def stop(self) -> None:
        """Stop serving, drop every connection and wait for their threads; safe to call twice."""
        if self._server is None or self._stopping.is_set():
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        with self._connections_changed:
            for sock in self._connections:
                # A socket may already be closed, by a connection_reset fault or the peer.
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            # Handlers notice the shutdown at their next read or wait; a download may take longer.
            self._connections_changed.wait_for(lambda: not self._connections, timeout=5.0)
        log.info("ims-emulator stopped")

    def __enter__(self) -> ImsEmulator:
        return self if self._server is not None else self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the emulator is not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        scheme = "http" if self._ssl_context is None else "https"
        return f"{scheme}://{host}:{self.port}"

    def reset_stats(self) -> None:
        self.stats.reset()

    # --- used by the handler threads -------------------------------------------------------------

    def _track(self, sock: socket.socket) -> None:
        with self._connections_changed:
            self._connections.add(sock)

    def _untrack(self, sock: socket.socket) -> None:
        with self._connections_changed:
            self._connections.discard(sock)
            self._connections_changed.notify_all()

    def _admit(self, secret_id: str, qps_limit: int | None, arrival: float) -> None:
        with self._admission:
            self._limiter.admit(secret_id, qps_limit, arrival)
            self.stats.record_admitted(arrival)

    def _draw_fault(self, faults: Faults) -> Fault | None:
        with self._admission:
            return faults.draw()

    def _injected_rate_limit(self, secret_id: str, qps_limit: int | None) -> ImsError:
        with self._admission:
            return self._limiter.injected_error(secret_id, qps_limit, time.monotonic())
