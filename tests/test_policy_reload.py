"""The policy changed without a restart, in real gateway processes: a fleet of two replicas follows a
Kubernetes ConfigMap's symlink swap within 5 s, a bad file is kept out (the previous policy answers,
one log line, the metric set), and a bad file at start-up exits 2 listing every problem."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import pytest
from moderation.v1 import moderation_service_pb2_grpc
from moderation.v1.moderation_service_pb2 import ModerateImageRequest, ModerateImageResponse, Suggestion

from emulator import ImsEmulator
from emulator.images import make_png
from service.policy.loading import load_policy
from testbed.processes import free_port
from tests.support.eventually import eventually
from tests.support.gateway import CHANNEL_OPTIONS, GatewayFactory
from tests.support.policy_files import policy_settings, write_policy
from tests.support.service_process import start_service, stop_gateway, wait_serving

PORN_90 = make_png(64, 64, "IMSEMU:Block:Porn:SexBehavior:90")
STRICT = "[default.thresholds]\nPorn = { review = 50, block = 80 }\n"
LENIENT = "[default.thresholds]\nPorn = { review = 50, block = 95 }\n"
# Every replica must follow a change within this.
PROPAGATION = 5.0


class ConfigMapVolume:
    """A folder laid out as the kubelet mounts a ConfigMap: `policy.toml -> ..data/policy.toml`, and
    `..data` a symlink to a timestamped folder, swapped atomically on each update."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._generation = 0

    @property
    def policy(self) -> Path:
        return self.root / "policy.toml"

    def publish(self, text: str) -> None:
        self._generation += 1
        folder = self.root / f"..2026_{self._generation:04d}"
        folder.mkdir()
        (folder / "policy.toml").write_text(text, encoding="utf-8")
        swap = self.root / "..data_tmp"
        swap.symlink_to(folder.name)
        os.replace(swap, self.root / "..data")
        if not self.policy.is_symlink():
            self.policy.symlink_to(Path("..data") / "policy.toml")


@contextlib.asynccontextmanager
async def replica(emulator: ImsEmulator, policy: Path) -> AsyncIterator[tuple[str, str]]:
    """A gateway process with the policy file; yields its address and /metrics URL."""
    port, metrics = free_port(), f"127.0.0.1:{free_port()}"
    process = start_service(
        emulator, port, MODERATION_POLICY_FILE=str(policy), MODERATION_METRICS_LISTEN=metrics
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await wait_serving(channel)
        yield f"127.0.0.1:{port}", f"http://{metrics}/metrics"
    finally:
        await stop_gateway(process)


async def moderate(address: str) -> ModerateImageResponse:
    async with grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
        stub = moderation_service_pb2_grpc.ModerationServiceStub(channel)
        answer: ModerateImageResponse = await stub.ModerateImage(
            ModerateImageRequest(content=PORN_90), timeout=10
        )
        return answer


async def version_within(address: str, version: str, seconds: float) -> float:
    """Seconds until `address` answers with policy `version`; fails after `seconds`."""
    started = time.monotonic()

    async def on_version() -> bool:
        assert (await moderate(address)).decision.policy_version == version, (
            f"{address} still on the old policy"
        )
        return True

    await eventually(on_version, within=seconds, every=0.1)
    return time.monotonic() - started


async def reload_failed(url: str) -> float:
    async with httpx.AsyncClient() as client:
        text = (await client.get(url, timeout=5)).text
    lines = [line for line in text.splitlines() if line.startswith("moderation_policy_reload_failed")]
    return float(lines[0].rsplit(" ", 1)[1])


@pytest.mark.system
async def test_a_fleet_of_two_follows_a_configmap_swap_and_keeps_a_bad_file_out(
    tmp_path: Path, emulator: ImsEmulator
) -> None:
    volume = ConfigMapVolume(tmp_path)
    volume.publish(STRICT)
    async with (
        replica(emulator, volume.policy) as (one, one_metrics),
        replica(emulator, volume.policy) as (two, _),
    ):
        for address in (one, two):
            assert (await moderate(address)).suggestion == Suggestion.SUGGESTION_BLOCK
        volume.publish(LENIENT)
        lenient = load_policy(volume.policy).version
        await asyncio.gather(*(version_within(a, lenient, PROPAGATION) for a in (one, two)))
        assert (await moderate(one)).suggestion == Suggestion.SUGGESTION_REVIEW
        assert await reload_failed(one_metrics) == 0

        volume.publish("[default.thresholds]\nPorn = { review = 90, block = 10 }\n")

        async def noticed() -> bool:
            assert await reload_failed(one_metrics) == 1, "the bad file was not noticed"
            return True

        await eventually(noticed, within=PROPAGATION, every=0.1)
        for address in (one, two):
            answer = await moderate(address)
            assert (answer.suggestion, answer.decision.policy_version) == (
                Suggestion.SUGGESTION_REVIEW,
                lenient,
            )


@pytest.mark.system
def test_a_bad_policy_at_start_up_exits_2_listing_every_problem(
    tmp_path: Path, emulator: ImsEmulator
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(
        '[default.thresholds]\nPorn = { review = 90, block = 10 }\n[default]\nkeyword_lists = ["nope"]\n',
        encoding="utf-8",
    )
    process: subprocess.Popen[str] = start_service(emulator, free_port(), MODERATION_POLICY_FILE=str(policy))
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 2, output
    assert "MODERATION_POLICY_FILE" in output
    assert "review must not be above block" in output
    assert "no [keyword_lists.nope]" in output


async def test_a_bad_file_at_reload_is_logged_once_and_the_previous_policy_kept(
    tmp_path: Path, make_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_policy(tmp_path, LENIENT)
    gateway = await make_gateway(**policy_settings(path))
    watcher, before = gateway.policy_watcher, load_policy(path).version
    assert watcher is not None
    write_policy(tmp_path, "[default.thresholds]\nPorn = { review = 'high' }\n")
    with caplog.at_level(logging.ERROR, logger="service.policy.reload"):
        await watcher.check()
        await watcher.check()  # nothing changed since: no second line
    assert len(caplog.records) == 1
    assert "keeping version " + before in caplog.records[0].getMessage()
    answer = await moderate(f"127.0.0.1:{gateway.port}")
    assert (answer.suggestion, answer.decision.policy_version) == (Suggestion.SUGGESTION_REVIEW, before)
