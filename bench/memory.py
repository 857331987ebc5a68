"""The gateway's peak RSS while streaming large images: it should follow the window, not the length."""

from __future__ import annotations

from dataclasses import dataclass

from emulator.images import make_png
from testbed import processes
from testbed.client import open_channel, stub
from testbed.processes import Credentials
from testbed.stream import StreamResult, run_stream

LARGE_IMAGE_BYTES = 5_000_000


def large_image() -> bytes:
    """A valid PNG padded with zeros to 5 MB: IMS and the gateway read only its header."""
    png = make_png(256, 256)
    return png + bytes(LARGE_IMAGE_BYTES - len(png))


@dataclass(frozen=True)
class MemoryResult:
    length: int
    # VmRSS once the gateway serves, before the stream.
    idle_rss: int
    # VmHWM after the stream: the most the gateway ever held resident.
    peak_rss: int
    stream: StreamResult


async def peak_rss(emulator_url: str, credentials: Credentials, image: bytes, length: int) -> MemoryResult:
    """Streams `length` copies of `image` through a fresh gateway, so its high-water mark is this stream's."""
    with processes.gateway(credentials, emulator_url) as gateway:
        idle = gateway.status_bytes("VmRSS")
        async with open_channel(gateway.address) as channel:
            result = await run_stream(stub(channel), [image], length)
        return MemoryResult(length, idle, gateway.status_bytes("VmHWM"), result)
