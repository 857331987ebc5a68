"""The resend after a revoked key takes a rate slot like any other request (issue 23's code observation),
against the loopback IMS emulator and real key files."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from moderation.v1.moderation_service_pb2 import Suggestion

from backends.tencent.credentials import refresh
from emulator import ImsEmulator
from service.deadlines import Deadline
from service.governor import RateGovernor
from service.retry import Retrier, RetryPolicy
from tests.support.credentials import (
    NEW_ID,
    NEW_KEY,
    OLD_ID,
    OLD_KEY,
    REQUEST,
    file_options,
    ims,
    make,
    write_secret_dir,
)

__all__ = ["ims"]


async def test_every_request_of_a_resend_after_a_revoked_key_takes_a_rate_slot(
    ims: ImsEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    governor = RateGovernor(50)
    write_secret_dir(tmp_path, OLD_ID, OLD_KEY)
    # Only the refused request can make the gateway read the files again.
    monkeypatch.setattr(refresh, "POLL_SECONDS", 3600.0)
    subject = Retrier(backend := make(file_options(ims, tmp_path)), RetryPolicy(), governor=governor)
    await backend.start()
    try:
        write_secret_dir(tmp_path, NEW_ID, NEW_KEY)
        ims.config.revoked = {OLD_ID}
        calls = await asyncio.gather(*(subject.moderate(REQUEST, Deadline.for_call(5.0)) for _ in range(5)))
    finally:
        await governor.aclose()
        await backend.aclose()
    assert all(c.suggestion == Suggestion.SUGGESTION_PASS for c in calls)
    refused = ims.stats.errors_by_code["AuthFailure.SecretIdNotFound"]
    assert refused >= 1
    # Each refused request was resent: every request that reached IMS had its slot.
    assert ims.stats.requests == 5 + refused
    assert governor.grants == ims.stats.requests
