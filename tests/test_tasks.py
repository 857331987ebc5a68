"""Asynchronous tasks on one real gateway process without Redis, against the emulator and a loopback
receiver: callbacks signed (verified by the `standardwebhooks` package), equal to GetModerationTask,
retried until the receiver is back, stopped by 410, never redirected, refused towards loopback unless
allowed; idempotent submissions; drained on SIGTERM; expired tasks answer NOT_FOUND saying so."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from moderation.v1.moderation_service_pb2 import (
    DeliveryState,
    GetModerationTaskRequest,
    ModerateImageRequest,
    SubmitModerationRequest,
    TaskState,
)
from moderation.v1.moderation_service_pb2_grpc import ModerationServiceStub
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from emulator import EmulatorConfig, ImsEmulator
from testbed.client import open_channel
from tests.support.gateway import SECRET_ID, SECRET_KEY
from tests.support.tasks import (
    IMAGE,
    OLD_SECRET,
    SCHEDULE,
    SECRET,
    TASK_SETTINGS,
    Receiver,
    attempted,
    data_of,
    expiry,
    gateway_process,
    listening,
    settled,
    submit,
)


@pytest.fixture(scope="module")
def emulator() -> Iterator[ImsEmulator]:
    config = EmulatorConfig(secret_id=SECRET_ID, secret_key=SECRET_KEY, latency=0.02)
    with ImsEmulator(config, host="127.0.0.1", port=0) as emu:
        yield emu


@pytest.fixture(scope="module")
def address(emulator: ImsEmulator) -> Iterator[str]:
    with gateway_process(emulator, **TASK_SETTINGS) as (_, address):
        yield address


@pytest.fixture
async def stub(address: str) -> AsyncIterator[ModerationServiceStub]:
    async with open_channel(address) as channel:
        yield ModerationServiceStub(channel)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with listening() as receiver:
        yield receiver


def error_info(error: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str, list[str]]:
    status = rpc_status.from_call(error)
    assert status is not None
    reason, fields = "", []
    for detail in status.details:
        info, bad = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
        if detail.Unpack(info):
            reason = info.reason
        elif detail.Unpack(bad):
            fields = [v.field for v in bad.field_violations]
    return error.code(), reason, fields


async def test_each_task_is_called_back_once_signed_with_what_get_answers(
    stub: ModerationServiceStub, receiver: Receiver
) -> None:
    ids = await asyncio.gather(*(submit(stub, f"img-{i}", receiver.url()) for i in range(20)))
    await receiver.wait_for(20)
    tasks = {task_id: await settled(stub, task_id) for task_id in ids}
    for hook in (Webhook(SECRET), Webhook(OLD_SECRET)):  # either active secret verifies every callback
        for request in receiver.received:
            hook.verify(request.body, request.headers)
    by_id = {r.headers["webhook-id"]: r for r in receiver.received}
    assert sorted(by_id) == sorted(ids)
    for task_id, task in tasks.items():
        body = by_id[task_id].json
        assert body["type"] == "moderation.task.succeeded"
        assert body["data"] == data_of(task)
        assert body["timestamp"] == task.finished_at.ToJsonString()
        assert task.delivery.state == DeliveryState.DELIVERY_STATE_DELIVERED
        assert (task.delivery.attempts, task.delivery.last_http_status) == (1, 200)


async def test_the_same_key_or_data_id_is_the_same_task(stub: ModerationServiceStub) -> None:
    first = await submit(stub, "same-image")
    assert await submit(stub, "same-image") == first
    keyed = await submit(stub, "other-1", key="order-17")
    assert await submit(stub, "other-2", key="order-17") == keyed != first
    task = await settled(stub, first)
    assert task.state == TaskState.TASK_STATE_SUCCEEDED
    assert task.result.data_id == "same-image"
    assert task.delivery.state == DeliveryState.DELIVERY_STATE_NONE


async def test_410_stops_a_redirect_is_not_followed_and_a_receiver_back_is_reached(
    stub: ModerationServiceStub, receiver: Receiver
) -> None:
    receiver.answers["/gone"] = (410, {})
    receiver.answers["/moved"] = (307, {"Location": receiver.url("/target")})
    receiver.answers["/busy"] = (503, {"Retry-After": "0"})
    gone = await submit(stub, "gone", receiver.url("/gone"))
    moved = await submit(stub, "moved", receiver.url("/moved"))
    busy = await submit(stub, "busy", receiver.url("/busy"))
    await receiver.wait_for(3, path="/busy")
    del receiver.answers["/busy"]  # the receiver recovers

    gone_task, moved_task, busy_task = await asyncio.gather(
        settled(stub, gone), settled(stub, moved), settled(stub, busy)
    )
    assert (gone_task.delivery.state, gone_task.delivery.attempts) == (
        DeliveryState.DELIVERY_STATE_STOPPED,
        1,
    )
    assert len(receiver.by_path()["/gone"]) == 1
    assert moved_task.delivery.state == DeliveryState.DELIVERY_STATE_GAVE_UP
    assert moved_task.delivery.attempts == len(SCHEDULE.split()) == len(receiver.by_path()["/moved"])
    assert moved_task.delivery.last_http_status == 307
    assert "/target" not in receiver.by_path()
    assert busy_task.delivery.state == DeliveryState.DELIVERY_STATE_DELIVERED
    assert busy_task.delivery.attempts == len(receiver.by_path()["/busy"]) >= 4
    ids = {r.headers["webhook-id"] for r in receiver.by_path()["/busy"]}
    assert ids == {busy}  # the same webhook-id on every retry


async def test_a_receiver_down_then_back_gets_the_callback(stub: ModerationServiceStub) -> None:
    receiver = Receiver()  # not listening yet: connections are refused
    task_id = await submit(stub, "while-down", receiver.url())
    await attempted(stub, task_id, 2)
    await receiver.start()
    try:
        task = await settled(stub, task_id)
        assert task.delivery.state == DeliveryState.DELIVERY_STATE_DELIVERED
        assert task.delivery.attempts >= 3
        assert [r.headers["webhook-id"] for r in receiver.received] == [task_id]
    finally:
        await receiver.stop()


async def test_invalid_submissions_are_refused_naming_the_field(stub: ModerationServiceStub) -> None:
    cases = [
        (SubmitModerationRequest(request=ModerateImageRequest(content=b"tiny")), "request.content"),
        (
            SubmitModerationRequest(request=ModerateImageRequest(content=IMAGE), callback_url="ftp://x/y"),
            "callback_url",
        ),
        (
            SubmitModerationRequest(
                request=ModerateImageRequest(content=IMAGE), callback_url="http://169.254.169.254/hook"
            ),
            "callback_url",
        ),
        (
            SubmitModerationRequest(request=ModerateImageRequest(content=IMAGE), idempotency_key="a b"),
            "idempotency_key",
        ),
    ]
    for request, field in cases:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.SubmitModeration(request, timeout=5)
        code, _, fields = error_info(refused.value)
        assert code is grpc.StatusCode.INVALID_ARGUMENT
        assert field in fields
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await stub.GetModerationTask(GetModerationTaskRequest(task_id="tsk_1_nothing"), timeout=5)
    assert error_info(unknown.value)[:2] == (grpc.StatusCode.NOT_FOUND, "TASK_EXPIRED")
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await stub.GetModerationTask(GetModerationTaskRequest(task_id="not-a-task"), timeout=5)
    assert error_info(unknown.value)[:2] == (grpc.StatusCode.NOT_FOUND, "TASK_NOT_FOUND")


async def test_loopback_is_refused_unless_allowed_and_a_task_expires_after_its_retention(
    emulator: ImsEmulator, receiver: Receiver
) -> None:
    settings = {**TASK_SETTINGS, "MODERATION_CALLBACK_ALLOWED_NETWORKS": "", "MODERATION_TASK_RETENTION": "1"}
    with gateway_process(emulator, **settings) as (_, address):
        async with open_channel(address) as channel:
            stub = ModerationServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await submit(stub, "bare-loopback", receiver.url())
            assert error_info(refused.value)[0] is grpc.StatusCode.INVALID_ARGUMENT
            # A name is checked as it resolves, at each delivery: localhost is loopback, refused there.
            by_name = await submit(stub, "named-loopback", f"http://localhost:{receiver.port}/hook")
            task = await settled(stub, by_name)
            assert task.delivery.state == DeliveryState.DELIVERY_STATE_GAVE_UP
            assert task.delivery.attempts == 1
            assert task.delivery.last_error.startswith("refused")
            assert receiver.received == []
            # Kept for the retention (1 s here) after its outcome, then NOT_FOUND saying it expired.
            assert error_info(await expiry(stub, by_name))[:2] == (grpc.StatusCode.NOT_FOUND, "TASK_EXPIRED")


async def test_sigterm_drains_the_tasks_in_the_process(receiver: Receiver) -> None:
    slow = EmulatorConfig(secret_id=SECRET_ID, secret_key=SECRET_KEY, latency=0.3)
    with (
        ImsEmulator(slow, host="127.0.0.1", port=0) as emulator,
        gateway_process(emulator, **TASK_SETTINGS, IMS_QPS="20") as (process, address),
    ):
        async with open_channel(address) as channel:
            stub = ModerationServiceStub(channel)
            ids = await asyncio.gather(*(submit(stub, f"drain-{i}", receiver.url()) for i in range(30)))
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 30) == 0
    assert sorted(r.headers["webhook-id"] for r in receiver.received) == sorted(ids)


async def test_each_caller_has_its_own_secrets_rotated_without_restart_and_its_own_networks(
    emulator: ImsEmulator, receiver: Receiver, tmp_path: Path
) -> None:
    (tmp_path / "tokens").write_text("alpha alpha-token-0123456789\nbeta beta-token-0123456789\n")
    alpha_secrets = tmp_path / "alpha-webhooks"
    alpha_secrets.write_text(OLD_SECRET)
    (tmp_path / "callers.toml").write_text(
        '[alpha]\nsecrets_file = "alpha-webhooks"\nallowed_networks = ["127.0.0.0/8"]\n'
    )
    settings = {
        **TASK_SETTINGS,
        "MODERATION_CALLBACK_ALLOWED_NETWORKS": "",
        "MODERATION_AUTH_TOKENS_FILE": str(tmp_path / "tokens"),
        "MODERATION_CALLBACK_CALLERS_FILE": str(tmp_path / "callers.toml"),
    }
    alpha = (("authorization", "Bearer alpha-token-0123456789"),)
    beta = (("authorization", "Bearer beta-token-0123456789"),)
    with gateway_process(emulator, **settings) as (_, address):
        async with open_channel(address) as channel:
            stub = ModerationServiceStub(channel)
            first = await submit(stub, "alpha-1", receiver.url(), metadata=alpha)
            await receiver.wait_for_tasks([first])
            alpha_secrets.write_text(f"{SECRET} {OLD_SECRET}")  # rotation: the new secret in front
            second = await submit(stub, "alpha-2", receiver.url(), metadata=alpha)
            await receiver.wait_for_tasks([second])
            with pytest.raises(grpc.aio.AioRpcError) as refused:  # loopback is alpha's network only
                await submit(stub, "beta-1", receiver.url(), metadata=beta)
            assert error_info(refused.value)[2] == ["callback_url"]
            with pytest.raises(grpc.aio.AioRpcError) as hidden:  # one caller never sees another's task
                await stub.GetModerationTask(GetModerationTaskRequest(task_id=first), metadata=beta)
            assert error_info(hidden.value)[0] is grpc.StatusCode.NOT_FOUND
    by_id = {r.headers["webhook-id"]: r for r in receiver.received}
    Webhook(OLD_SECRET).verify(by_id[first].body, by_id[first].headers)
    with pytest.raises(WebhookVerificationError):  # the gateway's own secret does not sign alpha's
        Webhook(SECRET).verify(by_id[first].body, by_id[first].headers)
    Webhook(SECRET).verify(by_id[second].body, by_id[second].headers)


async def test_a_task_runs_as_its_submitter_so_the_callers_quota_governs_it(
    emulator: ImsEmulator, tmp_path: Path
) -> None:
    (tmp_path / "tokens").write_text("uploads uploads-token-0123456789\n")
    (tmp_path / "routes.toml").write_text(
        '[backends.cloud]\ntype = "tencent"\nsecret_id_env = "TENCENTCLOUD_SECRET_ID"\n'
        f'secret_key_env = "TENCENTCLOUD_SECRET_KEY"\nendpoint = "{emulator.url}"\n\n'
        '[default]\nchain = ["cloud"]\n\n[quotas.uploads]\nper_day = 2\n'
    )
    settings = {
        **TASK_SETTINGS,
        "MODERATION_AUTH_TOKENS_FILE": str(tmp_path / "tokens"),
        "MODERATION_ROUTES": str(tmp_path / "routes.toml"),
        "MODERATION_CACHE": "off",
    }
    uploads = (("authorization", "Bearer uploads-token-0123456789"),)
    billed_before = emulator.stats.billed
    with gateway_process(emulator, **settings) as (_, address):
        async with open_channel(address) as channel:
            stub = ModerationServiceStub(channel)
            ids = [await submit(stub, f"quota-{n}", metadata=uploads) for n in range(4)]
            tasks = [await settled(stub, task_id, metadata=uploads) for task_id in ids]
    # Two within the caller's quota; the others failed on it, as the caller's own calls would, unbilled.
    assert (
        sorted(t.state for t in tasks)
        == [TaskState.TASK_STATE_SUCCEEDED] * 2 + [TaskState.TASK_STATE_FAILED] * 2
    )
    for task in tasks:
        if task.state == TaskState.TASK_STATE_FAILED:
            assert task.error.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
            info = error_details_pb2.ErrorInfo()
            assert any(detail.Unpack(info) for detail in task.error.details)
            assert info.reason == "CALLER_QUOTA_EXHAUSTED"
    assert emulator.stats.billed - billed_before == 2
