"""Socket-level behaviour: noticing a client that gave up, and hanging up abruptly or gracefully."""

from __future__ import annotations

import contextlib
import enum
import math
import select
import socket
import ssl
import struct
import threading
import time

# How often a wait re-checks the stop flag; socket events end a wait at once.
_STOP_CHECK_INTERVAL = 0.05
# How long `linger` reads what a refused peer still sends.
_LINGER_SECONDS = 1.0


class Waited(enum.Enum):
    ELAPSED = "elapsed"
    PEER_CLOSED = "peer closed"
    STOPPING = "stopping"


def _peer_closed(sock: socket.socket) -> bool:
    try:
        # Peeks at the TCP stream, beneath any TLS (an SSLSocket refuses recv flags). A TLS client that
        # gives up sends close_notify before its FIN, which looks like more bytes, so over TLS a wait
        # does not notice it.
        return socket.socket.recv(sock, 1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:  # ECONNRESET and friends: the peer is gone just the same
        return True


def wait(sock: socket.socket, seconds: float, stopping: threading.Event) -> Waited:
    """Sleep `seconds` (math.inf for ever) unless the peer closes the connection or the server stops.

    A readable socket with no data means the peer closed it, which is how a cancelled call or a
    client timeout looks from here.
    """
    deadline = time.monotonic() + seconds
    poller = select.poll()  # not select.select: descriptors above 1024 are routine under load
    poller.register(sock, select.POLLIN)
    watching = True
    while not stopping.is_set():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return Waited.ELAPSED
        step = min(remaining, _STOP_CHECK_INTERVAL)
        if not watching:
            time.sleep(step)
        elif poller.poll(math.ceil(step * 1000)):
            if _peer_closed(sock):
                return Waited.PEER_CLOSED
            # The client sent more bytes (a pipelined request): polling again would spin, so the
            # rest of this wait can no longer notice a disconnect.
            watching = False
    return Waited.STOPPING


def reset(sock: socket.socket) -> None:
    """Close with SO_LINGER 0, so the peer gets a TCP RST instead of an orderly FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def linger(sock: ssl.SSLSocket) -> None:
    """Half-close a connection whose TLS handshake failed, then read until the peer closes.

    Closing at once, with the client's request unread, would send a TCP RST that can overtake the TLS
    alert just sent; the client would then see a bare "connection reset" instead of the reason.
    """
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)  # on an SSLSocket this also drops the TLS layer: reads are raw
        sock.settimeout(_LINGER_SECONDS)
        while sock.recv(65536):
            pass
