"""TLS on the gRPC listener, caller authentication (mutual TLS, bearer tokens) and per-caller shares."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import grpc
import pytest
import trustme
from grpc_health.v1 import health_pb2, health_pb2_grpc
from moderation.v1 import moderation_service_pb2_grpc
from moderation.v1.moderation_service_pb2 import ModerateImageRequest, StreamModerateImagesRequest

from emulator import ImsEmulator
from emulator.images import make_png
from tests.support.gateway import GatewayFactory
from tests.support.raw_http2 import unary_call
from tests.support.richstatus import rich_error

Stub = moderation_service_pb2_grpc.ModerationServiceStub
IMAGE = make_png(256, 256)
CHECKOUT_TOKEN = "checkout-0123456789abcdef"
SEARCH_TOKEN = "search-fedcba9876543210"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_files(ca: trustme.CA, tmp_path: Path) -> dict[str, Path]:
    server = ca.issue_cert("localhost", "127.0.0.1")
    files = {"cert": tmp_path / "server.pem", "key": tmp_path / "server.key", "ca": tmp_path / "ca.pem"}
    server.cert_chain_pems[0].write_to_path(str(files["cert"]))
    server.private_key_pem.write_to_path(str(files["key"]))
    ca.cert_pem.write_to_path(str(files["ca"]))
    return files


def callers(log: io.StringIO) -> list[str]:
    return [json.loads(line)["caller"] for line in log.getvalue().splitlines()]


def tls_channel(port: int, ca: trustme.CA, client: trustme.LeafCert | None = None) -> grpc.aio.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca.cert_pem.bytes(),
        private_key=client.private_key_pem.bytes() if client else None,
        certificate_chain=client.cert_chain_pems[0].bytes() if client else None,
    )
    return grpc.aio.secure_channel(f"localhost:{port}", credentials)


async def test_tls_listener(make_gateway: GatewayFactory, tls_files: dict[str, Path], ca: trustme.CA) -> None:
    gateway = await make_gateway(tls_cert=tls_files["cert"], tls_key=tls_files["key"])
    async with tls_channel(gateway.port, ca) as channel:
        assert (await Stub(channel).ModerateImage(ModerateImageRequest(content=IMAGE))).backend == "tencent"
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as plain:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await Stub(plain).ModerateImage(ModerateImageRequest(content=IMAGE), timeout=3)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_mutual_tls_names_the_caller(
    make_gateway: GatewayFactory, tls_files: dict[str, Path], ca: trustme.CA, access_log: io.StringIO
) -> None:
    gateway = await make_gateway(
        tls_cert=tls_files["cert"], tls_key=tls_files["key"], tls_client_ca=tls_files["ca"]
    )
    client = ca.issue_cert("checkout.internal", common_name="checkout")
    async with tls_channel(gateway.port, ca, client) as channel:
        await Stub(channel).ModerateImage(ModerateImageRequest(content=IMAGE))
    async with tls_channel(gateway.port, ca) as anonymous:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await Stub(anonymous).ModerateImage(ModerateImageRequest(content=IMAGE), timeout=3)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert callers(access_log) == ["checkout"]


async def test_bearer_tokens(
    make_gateway: GatewayFactory, emulator: ImsEmulator, access_log: io.StringIO
) -> None:
    gateway = await make_gateway(auth_tokens={CHECKOUT_TOKEN: "checkout", SEARCH_TOKEN: "search"})
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        stub = Stub(channel)
        for metadata in (
            (),
            (("authorization", "Bearer wrong-token-0000000000"),),
            (("authorization", CHECKOUT_TOKEN),),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.ModerateImage(ModerateImageRequest(content=IMAGE), metadata=metadata)
            error = rich_error(caught.value)
            assert (error.code, error.info.reason) == (
                grpc.StatusCode.UNAUTHENTICATED,
                "CALLER_UNAUTHENTICATED",
            )
        assert emulator.stats.requests == 0
        await stub.ModerateImage(
            ModerateImageRequest(content=IMAGE), metadata=(("authorization", f"Bearer {CHECKOUT_TOKEN}"),)
        )
        stream = stub.StreamModerateImages(
            iter([StreamModerateImagesRequest(request=ModerateImageRequest(content=IMAGE))]),
            metadata=(("authorization", f"Bearer {SEARCH_TOKEN}"),),
        )
        assert len([a async for a in stream]) == 1
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            _ = [a async for a in stub.StreamModerateImages(iter([StreamModerateImagesRequest()]))]
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # Probes need no credentials.
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert [c for c in callers(access_log) if c] == ["checkout", "search"]
    assert CHECKOUT_TOKEN not in access_log.getvalue()


async def test_a_caller_spends_only_its_share(make_gateway: GatewayFactory, emulator: ImsEmulator) -> None:
    gateway = await make_gateway(qps=20, caller_share=0.25, auth_tokens={CHECKOUT_TOKEN: "checkout"})
    metadata = (("authorization", f"Bearer {CHECKOUT_TOKEN}"),)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        stub = Stub(channel)
        await asyncio.gather(
            *(
                stub.ModerateImage(ModerateImageRequest(content=IMAGE), metadata=metadata, timeout=10)
                for _ in range(8)
            )
        )
    assert emulator.stats.max_in_one_second <= 5


@pytest.mark.parametrize(
    "presented",
    ["Bearer ", "Bearer", "Basic " + CHECKOUT_TOKEN, CHECKOUT_TOKEN, "Bearer " + "x" * 6000, "Bearer     "],
    ids=["empty", "no-token", "not-bearer", "no-scheme", "huge", "blank"],
)
async def test_a_malformed_token_is_unauthenticated(
    make_gateway: GatewayFactory, emulator: ImsEmulator, presented: str
) -> None:
    gateway = await make_gateway(auth_tokens={CHECKOUT_TOKEN: "checkout"})
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await Stub(channel).ModerateImage(
                ModerateImageRequest(content=IMAGE), metadata=(("authorization", presented),), timeout=5
            )
    error = rich_error(caught.value)
    assert (error.code, error.info.reason) == (grpc.StatusCode.UNAUTHENTICATED, "CALLER_UNAUTHENTICATED")
    assert emulator.stats.requests == 0


@pytest.mark.parametrize("token", [b"Bearer tok\xe9n-0123456789abcdef", b"Bearer \x80\xff", b"Bearer \x7f"])
async def test_a_token_with_bytes_grpc_clients_refuse_to_send_is_unauthenticated(
    make_gateway: GatewayFactory, emulator: ImsEmulator, token: bytes
) -> None:
    gateway = await make_gateway(auth_tokens={CHECKOUT_TOKEN: "checkout"})
    message = ModerateImageRequest(content=IMAGE).SerializeToString()
    received = await asyncio.to_thread(
        unary_call,
        gateway.port,
        "/moderation.v1.ModerationService/ModerateImage",
        message,
        [(b"authorization", token)],
    )
    assert received.get(b"grpc-status") == str(grpc.StatusCode.UNAUTHENTICATED.value[0]).encode()
    assert emulator.stats.requests == 0
