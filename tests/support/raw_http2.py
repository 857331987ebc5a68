"""A gRPC call over a raw HTTP/2 connection (the `h2` package), for what grpc's own clients refuse to
send: header values with bytes outside printable ASCII, as other clients and proxies may pass them."""

from __future__ import annotations

import socket
import struct

import h2.config
import h2.connection
import h2.events


def unary_call(
    port: int, path: str, message: bytes, headers: list[tuple[bytes, bytes]]
) -> dict[bytes, bytes]:
    """Sends one unary gRPC call; returns the response's headers and trailers merged."""
    connection = h2.connection.H2Connection(
        h2.config.H2Configuration(
            client_side=True, validate_outbound_headers=False, normalize_outbound_headers=False
        )
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        connection.initiate_connection()
        stream = connection.get_next_available_stream_id()
        connection.send_headers(
            stream,
            [
                (b":method", b"POST"),
                (b":scheme", b"http"),
                (b":path", path.encode()),
                (b":authority", f"127.0.0.1:{port}".encode()),
                (b"content-type", b"application/grpc"),
                (b"te", b"trailers"),
                *headers,
            ],
        )
        connection.send_data(stream, struct.pack(">BI", 0, len(message)) + message, end_stream=True)
        sock.sendall(connection.data_to_send())
        received: dict[bytes, bytes] = {}
        while True:
            data = sock.recv(65536)
            if not data:
                return received
            for event in connection.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                    received.update(dict(event.headers))
                if (
                    isinstance(event, h2.events.StreamEnded | h2.events.StreamReset)
                    and event.stream_id == stream
                ):
                    return received
            sock.sendall(connection.data_to_send())
