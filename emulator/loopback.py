"""A small threaded HTTP server on loopback for the credential emulators (CVM metadata, STS).

Subclasses answer in `respond`; `failing` makes every request get HTTP 500 instead, so tests can
break a refresh and mend it while the gateway runs. `trickle_seconds` above 0 sends each answer's body
one byte at a time, that many seconds apart: an endpoint that never times out a read, yet never answers.
"""

from __future__ import annotations

import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

log = logging.getLogger("ims_emulator")

Answer = tuple[int, str, bytes]


class LoopbackServer:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._address = (host, port)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        # Read once per request: tests may flip it while requests are in flight.
        self.failing = False
        self.trickle_seconds = 0.0
        self._lock = threading.Lock()
        self._requests = 0

    def respond(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        raise NotImplementedError

    @property
    def requests(self) -> int:
        """Requests answered, failed ones included."""
        with self._lock:
            return self._requests

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the server is not started")
        return f"http://{self._address[0]}:{self._server.server_address[1]}"

    def start(self) -> Self:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length > 0 else b""
                with owner._lock:
                    owner._requests += 1
                if owner.failing:
                    status, content_type, payload = 500, "text/plain", b"injected failure\n"
                else:
                    headers = {name.lower(): value for name, value in self.headers.items()}
                    status, content_type, payload = owner.respond(self.command, self.path, headers, body)
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                pause = owner.trickle_seconds
                if pause <= 0:
                    self.wfile.write(payload)
                    return
                try:
                    for offset in range(len(payload)):
                        self.wfile.write(payload[offset : offset + 1])
                        time.sleep(pause)
                except OSError:
                    # The client gave up waiting: the point of trickling.
                    self.close_connection = True

            do_GET = do_POST = _answer

            def log_message(self, format: str, *args: Any) -> None:
                log.debug(format, *args)

        server = ThreadingHTTPServer(self._address, Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name=type(self).__name__, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
