"""The fleet bench counts each call IMS received for the gateway process whose connection carried it:
real gateways streaming different numbers of items to the emulator, in this process as in the bench."""

from __future__ import annotations

import functools

import pytest

from bench.fleet import Counters, run_batch, start_replicas, stream_items
from bench.fleet_senders import Senders
from emulator import EmulatorConfig, ImsEmulator
from emulator.images import make_png
from testbed.processes import Credentials

pytestmark = pytest.mark.system

ITEMS = (30, 0, 12)


async def test_each_call_is_counted_for_the_replica_that_sent_it_second_by_second() -> None:
    credentials = Credentials.fresh()
    # No rate limit and no faults: each item is exactly one call, so the counts are exact.
    config = EmulatorConfig(secret_id=credentials.secret_id, secret_key=credentials.secret_key, latency=0.05)
    image = make_png(64, 64)
    with (
        ImsEmulator(config, host="127.0.0.1", port=0) as emulator,
        start_replicas(credentials, emulator.url, len(ITEMS), None) as replicas,
    ):
        jobs = [
            functools.partial(stream_items, replica.address, [image], items)
            for replica, items in zip(replicas, ITEMS, strict=True)
            if items
        ]
        batch = await run_batch(Counters(emulator), replicas, jobs, image=image, unary_calls=0, unary_on=[])
        received = emulator.stats.requests
    assert batch.results == sum(ITEMS)
    sent = batch.sent
    assert [sum(calls) for calls in sent.per_replica] == list(ITEMS)
    assert not any(sent.unattributed)
    assert sum(sent.total) == received == sum(ITEMS)
    # Every replica's line spans the same seconds, from the phase's first call.
    assert {len(calls) for calls in (*sent.per_replica, sent.total)} == {len(sent.total)}
    assert sent.total[0] > 0


def test_a_replica_that_has_exited_owns_no_connection() -> None:
    # Above the kernel's pid_max: no such process, as after a replica exits mid-phase.
    senders = Senders([2**22 + 1], 443)
    senders.look()
    assert senders.owners == {}
