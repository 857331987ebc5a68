"""The calls each replica sent IMS, second by second, from the emulator's own arrival stamps.

The emulator stamps every authenticated call with its arrival (as its rate limit judges it) and the
client's TCP port. While its connection is open a port belongs to one gateway process, so the bench
reads each replica's sockets under /proc while a phase runs and attributes every call to the replica
whose connection carried it: what IMS saw, with no help from the gateways (no header or metric of theirs).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.polling import polled

# A call holds its connection for the emulator's latency (0.8 s in the fleet benches), and a
# connection is kept for the next call: polling this often sees every connection the phase uses.
POLL_INTERVAL = 0.2
_SOCKET = "socket:["


def _socket_inodes(pid: int) -> set[str]:
    """The sockets `pid` holds; none once it has exited (its calls are then counted as no replica's)."""
    inodes: set[str] = set()
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except FileNotFoundError:
        return inodes
    for fd in fds:
        with contextlib.suppress(OSError):  # closed since the listing
            target = os.readlink(fd)
            if target.startswith(_SOCKET):
                inodes.add(target[len(_SOCKET) : -1])
    return inodes


def _port(address: str) -> int:
    """The port of a /proc/net/tcp address (`0100007F:1F90`, hexadecimal)."""
    return int(address.rsplit(":", 1)[1], 16)


def _connections_to(port: int) -> dict[str, int]:
    """Every TCP socket on this host whose remote port is `port`: its inode, and its local port."""
    found = {}
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if _port(remote) == port:
                found[inode] = _port(local)
    return found


@dataclass
class Senders:
    """Which replica (its index in `pids`) each local port connected to the emulator's `port` belongs to."""

    pids: Sequence[int]
    port: int
    owners: dict[int, int] = field(default_factory=dict)

    def look(self) -> None:
        connections = _connections_to(self.port)
        for index, pid in enumerate(self.pids):
            for inode in _socket_inodes(pid) & connections.keys():
                # A port a closed connection freed may be taken again, by another replica: the latest wins.
                self.owners[connections[inode]] = index


@contextlib.asynccontextmanager
async def watch_senders(pids: Sequence[int], port: int) -> AsyncIterator[Senders]:
    """Looks at the replicas' connections to the emulator's `port` until the block ends, and once more."""
    senders = Senders(pids, port)
    async with polled(lambda: asyncio.to_thread(senders.look), POLL_INTERVAL):
        yield senders


@dataclass(frozen=True)
class Timeline:
    """The calls IMS received in each whole second from the first call, by the replica that sent them.
    The last second is cut short by the phase's end."""

    # [replica][second]
    per_replica: list[list[int]] = field(default_factory=list)
    # Calls on a connection no replica was seen to hold.
    unattributed: list[int] = field(default_factory=list)

    @property
    def total(self) -> list[int]:
        return [sum(second) for second in zip(self.unattributed, *self.per_replica, strict=True)]


def tally(arrivals: Sequence[tuple[float, int]], owners: Mapping[int, int], replicas: int) -> Timeline:
    """`arrivals` ((monotonic stamp, client port), as the emulator records them) per second and replica."""
    if not arrivals:
        return Timeline([[] for _ in range(replicas)], [])
    start = min(stamp for stamp, _ in arrivals)
    seconds = int(max(stamp for stamp, _ in arrivals) - start) + 1
    per_replica = [[0] * seconds for _ in range(replicas)]
    unattributed = [0] * seconds
    for stamp, port in arrivals:
        owner = owners.get(port)
        (unattributed if owner is None else per_replica[owner])[int(stamp - start)] += 1
    return Timeline(per_replica, unattributed)
