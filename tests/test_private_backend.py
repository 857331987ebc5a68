"""A private deployment: the IMS protocol over mutual TLS, with TC3, a bearer token or no auth.

Every call crosses a real socket on loopback to the IMS emulator, serving HTTPS with certificates from
a throwaway CA (trustme), so the TLS failures are the ones OpenSSL really reports.
"""

from __future__ import annotations

import re
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme
from moderation.v1.moderation_service_pb2 import ModerateImageRequest, ModerateImageResponse, Suggestion

from backends.errors import BackendError, Kind
from backends.private import PrivateOptions, private_backend
from backends.tencent.auth import Credentials, TC3Auth
from backends.tencent.client import SERVICE, ImsBackend, ImsEndpoint
from emulator import EmulatorConfig, ImsEmulator
from emulator.images import make_png
from service.errors import KIND_POLICIES
from tests.support.gateway import SECRET_ID, SECRET_KEY

TOKEN = "private-deployment-token-0123456789"
DEPLOYMENT_ID = "AKIDPRIVATEDEPLOYMENT0000000001"
DEPLOYMENT_KEY = "private-deployment-secret-key"


@dataclass(frozen=True)
class Pki:
    """A CA with the server's and the gateway's certificates, and a second CA nobody trusts."""

    ca: trustme.CA
    server: trustme.LeafCert
    ca_file: Path
    client_cert_file: Path
    client_key_file: Path
    other_ca_file: Path
    other_client_cert_file: Path
    other_client_key_file: Path


def _write_leaf(cert: trustme.LeafCert, directory: Path, name: str) -> tuple[Path, Path]:
    cert_file, key_file = directory / f"{name}.pem", directory / f"{name}.key"
    cert.cert_chain_pems[0].write_to_path(cert_file)
    cert.private_key_pem.write_to_path(key_file)
    return cert_file, key_file


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca, other_ca = trustme.CA(), trustme.CA()
    ca.cert_pem.write_to_path(directory / "ca.pem")
    other_ca.cert_pem.write_to_path(directory / "other-ca.pem")
    client = _write_leaf(ca.issue_cert("gateway.internal"), directory, "client")
    other_client = _write_leaf(other_ca.issue_cert("gateway.internal"), directory, "other-client")
    return Pki(
        ca=ca,
        server=ca.issue_cert("127.0.0.1", "localhost"),
        ca_file=directory / "ca.pem",
        client_cert_file=client[0],
        client_key_file=client[1],
        other_ca_file=directory / "other-ca.pem",
        other_client_cert_file=other_client[0],
        other_client_key_file=other_client[1],
    )


def server_context(pki: Pki, server: trustme.LeafCert | None = None) -> ssl.SSLContext:
    """HTTPS that requires a client certificate signed by the CA."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    (server or pki.server).configure_cert(context)
    pki.ca.configure_trust(context)
    context.verify_mode = ssl.CERT_REQUIRED
    return context


@pytest.fixture
def serve(pki: Pki) -> Iterator[Callable[..., ImsEmulator]]:
    """Starts emulators (mutual TLS unless `tls=False`); stops them all at teardown."""
    started: list[ImsEmulator] = []

    def start(config: EmulatorConfig, *, tls: bool = True, **context: Any) -> ImsEmulator:
        emulator = ImsEmulator(config, ssl_context=server_context(pki, **context) if tls else None)
        started.append(emulator.start())
        return emulator

    yield start
    for emulator in started:
        emulator.stop()


@pytest.fixture
def bearer_emulator(serve: Callable[..., ImsEmulator]) -> ImsEmulator:
    return serve(EmulatorConfig(auth="bearer", bearer_token=TOKEN))


def mtls(pki: Pki, url: str, **overrides: Any) -> PrivateOptions:
    """Options for the bearer emulator over mutual TLS, with `overrides`."""
    options = PrivateOptions(
        url=url,
        auth="bearer",
        token=TOKEN,
        ca_file=pki.ca_file,
        client_cert_file=pki.client_cert_file,
        client_key_file=pki.client_key_file,
    )
    return replaced(options, **overrides)


def replaced(options: PrivateOptions, **changes: Any) -> PrivateOptions:
    """`options` with `changes`, validated again."""
    return PrivateOptions(**{**dict(options), **changes})


@pytest.fixture
async def backends() -> AsyncIterator[list[ImsBackend]]:
    """Backends a test builds, closed at teardown."""
    built: list[ImsBackend] = []
    yield built
    for backend in built:
        await backend.aclose()


@pytest.fixture
def build(backends: list[ImsBackend]) -> Callable[..., ImsBackend]:
    def build(options: PrivateOptions, **arguments: Any) -> ImsBackend:
        backends.append(private_backend(options, **arguments))
        return backends[-1]

    return build


async def moderate(backend: ImsBackend, image: bytes | None = None) -> ModerateImageResponse:
    content = image if image is not None else make_png(256, 256)
    return await backend.moderate(ModerateImageRequest(content=content), timeout=5)


async def failure(backend: ImsBackend) -> BackendError:
    with pytest.raises(BackendError) as caught:
        await moderate(backend)
    return caught.value


# --- what works -----------------------------------------------------------------------------------


async def test_mutual_tls_with_a_bearer_token(
    pki: Pki, bearer_emulator: ImsEmulator, build: Callable[..., ImsBackend]
) -> None:
    backend = build(mtls(pki, bearer_emulator.url), name="onprem-shanghai")

    result = await moderate(backend)

    assert (result.suggestion, result.label, result.backend) == (
        Suggestion.SUGGESTION_PASS,
        "Normal",
        "onprem-shanghai",
    )
    assert result.request_id
    assert bearer_emulator.stats.billed == 1


async def test_mutual_tls_with_tc3_signed_by_the_deployment_keys_on_its_own_path_and_region(
    pki: Pki, serve: Callable[..., ImsEmulator], build: Callable[..., ImsBackend]
) -> None:
    config = EmulatorConfig(DEPLOYMENT_ID, DEPLOYMENT_KEY, path="/ims/v1", regions={"ap-shanghai"})
    emulator = serve(config)
    settings = mtls(
        pki,
        emulator.url,
        auth="tc3",
        token=None,
        secret_id=DEPLOYMENT_ID,
        secret_key=DEPLOYMENT_KEY,
        path="/ims/v1",
        region="ap-shanghai",
    )

    # The signature covers the path as its canonical URI, so this passing means both agree on it.
    assert (await moderate(build(settings))).suggestion == Suggestion.SUGGESTION_PASS

    # The emulator serves that path and region only, and checks the deployment's keys.
    refusals: list[tuple[dict[str, Any], Kind, str]] = [
        ({"path": "/"}, Kind.FAILED, "HTTP404"),
        ({"region": "ap-guangzhou"}, Kind.MISCONFIGURED, "UnsupportedRegion"),
        (
            {"secret_key": "not-the-key"},
            Kind.MISCONFIGURED,
            "AuthFailure.SignatureFailure",
        ),
    ]
    for overrides, kind, code in refusals:
        error = await failure(build(replaced(settings, **overrides)))
        assert (error.kind, error.upstream_code) == (kind, code), overrides
    assert (emulator.stats.requests, emulator.stats.billed) == (4, 1)


async def test_no_auth_over_plain_http(
    serve: Callable[..., ImsEmulator], build: Callable[..., ImsBackend]
) -> None:
    emulator = serve(EmulatorConfig(auth="none"), tls=False)
    assert emulator.url.startswith("http://")

    result = await moderate(build(PrivateOptions(url=emulator.url, auth="none")))

    assert result.suggestion == Suggestion.SUGGESTION_PASS
    assert result.backend == "private"


async def test_every_result_structure_maps_over_https_as_from_tencent(
    pki: Pki,
    bearer_emulator: ImsEmulator,
    emulator: ImsEmulator,
    build: Callable[..., ImsBackend],
    backends: list[ImsBackend],
) -> None:
    markers = "IMSEMU:Block:Ad:QrCode:99 IMSEMU:Review:Abuse:Insult:80 IMSEMU:Block:Porn::100:lib"
    image = make_png(256, 256, marker=markers)
    tencent = ImsBackend(
        name="tencent",
        endpoint=ImsEndpoint(url=emulator.url + "/", region="ap-guangzhou"),
        auth=TC3Auth(Credentials(SECRET_ID, SECRET_KEY), service=SERVICE),
    )
    backends.append(tencent)

    private = await moderate(build(mtls(pki, bearer_emulator.url)), image)
    reference = await moderate(tencent, image)

    assert (private.suggestion, private.label, private.score) == (Suggestion.SUGGESTION_BLOCK, "Porn", 100)
    structures = ("label_results", "object_results", "ocr_results", "lib_results", "recognition_results")
    for structure in (*structures, "extra", "file_md5", "reason"):
        assert getattr(private, structure), structure
    assert private.request_id != reference.request_id
    for result in (private, reference):
        result.ClearField("request_id")
        result.ClearField("backend")
    assert private == reference


# --- what fails, and how --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("unknown server CA", "certificate verify failed: "),
        ("server certificate for another host", "certificate verify failed: IP address mismatch"),
        ("no client certificate", "tlsv13 alert certificate required"),
        ("client certificate from another CA", "tlsv1 alert unknown ca"),
    ],
)
async def test_tls_failures_are_misconfiguration_and_not_retried(
    pki: Pki,
    serve: Callable[..., ImsEmulator],
    build: Callable[..., ImsBackend],
    case: str,
    reason: str,
) -> None:
    server = pki.ca.issue_cert("ims.internal") if case == "server certificate for another host" else None
    emulator = serve(EmulatorConfig(auth="bearer", bearer_token=TOKEN), server=server)
    settings = mtls(pki, emulator.url)
    if case == "unknown server CA":
        settings = replaced(settings, ca_file=pki.other_ca_file)
    elif case == "no client certificate":
        settings = replaced(settings, client_cert_file=None, client_key_file=None)
    elif case == "client certificate from another CA":
        settings = replaced(
            settings, client_cert_file=pki.other_client_cert_file, client_key_file=pki.other_client_key_file
        )

    error = await failure(build(settings, name="onprem"))

    assert error.kind is Kind.MISCONFIGURED
    assert not KIND_POLICIES[error.kind].retried
    assert error.message.startswith("TLS handshake with the private deployment 'onprem' failed: ")
    assert reason in error.message
    assert emulator.stats.requests == 0


async def test_https_to_a_plain_http_port_is_misconfiguration(
    serve: Callable[..., ImsEmulator], build: Callable[..., ImsBackend]
) -> None:
    emulator = serve(EmulatorConfig(auth="none"), tls=False)
    https_url = emulator.url.replace("http://", "https://")

    error = await failure(build(PrivateOptions(url=https_url, auth="none")))

    assert (error.kind, KIND_POLICIES[error.kind].retried) == (Kind.MISCONFIGURED, False)
    assert error.message == "TLS handshake with the private deployment 'private' failed: wrong version number"


async def test_refused_connection_stays_a_retryable_network_fault(build: Callable[..., ImsBackend]) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    error = await failure(build(PrivateOptions(url=f"https://127.0.0.1:{port}", auth="none")))

    assert (error.kind, KIND_POLICIES[error.kind].retried) == (Kind.UNAVAILABLE, True)
    assert "TLS" not in error.message


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"token": "not-the-token"}, "AuthFailure.TokenFailure"),
        ({"auth": "none", "token": None}, "AuthFailure.InvalidAuthorization"),
    ],
)
async def test_a_refused_token_is_misconfiguration_with_the_upstream_code(
    pki: Pki,
    bearer_emulator: ImsEmulator,
    build: Callable[..., ImsBackend],
    overrides: dict[str, str | None],
    code: str,
) -> None:
    error = await failure(build(mtls(pki, bearer_emulator.url, **overrides)))

    assert (error.kind, error.upstream_code, KIND_POLICIES[error.kind].retried) == (
        Kind.MISCONFIGURED,
        code,
        False,
    )
    assert error.request_id
    assert bearer_emulator.stats.errors_by_code == {code: 1}
    assert bearer_emulator.stats.billed == 0


# --- settings -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "complaint"),
    [
        ({"url": "ftp://ims.internal"}, "must be http:// or https://"),
        ({"url": "https://"}, "must be http:// or https://"),
        ({"url": "https://[::1"}, "is not a URL"),
        ({"url": "https://ims.internal/ims/v1"}, "give the request path as `path`"),
        ({"url": "https://ims.internal/?x=1"}, "scheme, host and port only"),
        ({"path": "ims/v1"}, "must start with /"),
        ({"auth": "basic"}, "Input should be 'tc3', 'bearer' or 'none'"),
        ({"auth": "tc3"}, "credentials are required with auth 'tc3'"),
        ({"auth": "none", "secret_id": "AKID", "secret_key": "key"}, "credentials are required"),
        ({"auth": "tc3", "secret_id": "AKID"}, "credentials are required with auth 'tc3'"),
        ({"auth": "bearer"}, "a token is required with auth 'bearer'"),
        ({"auth": "none", "token": TOKEN}, "a token is required"),
        ({"client_cert_file": Path("client.pem")}, "a client certificate needs its key"),
        ({"client_key_file": Path("client.key")}, "a client certificate needs its key"),
        ({"url": "http://ims.internal", "ca_file": Path("ca.pem")}, "needs an https:// URL"),
        (
            {"url": "http://ims.internal", "client_cert_file": Path("c"), "client_key_file": Path("k")},
            "needs an https:// URL",
        ),
    ],
)
def test_inconsistent_settings_are_refused(fields: dict[str, Any], complaint: str, tmp_path: Path) -> None:
    # The files exist: only their combination is wrong.
    for key, value in fields.items():
        if isinstance(value, Path):
            fields = {**fields, key: tmp_path / value}
            fields[key].touch()
    with pytest.raises(ValueError, match=re.escape(complaint)):
        PrivateOptions(**{"url": "https://ims.internal:8443/", "auth": "none", **fields})


def test_unreadable_tls_files_are_refused_when_building(pki: Pki, tmp_path: Path) -> None:
    (tmp_path / "no.pem").write_text("not a certificate\n")
    with pytest.raises(ValueError, match="cannot load the CA file"):
        private_backend(PrivateOptions(url="https://ims.internal", auth="none", ca_file=tmp_path / "no.pem"))
    mismatched = PrivateOptions(
        url="https://ims.internal",
        auth="none",
        client_cert_file=pki.client_cert_file,
        client_key_file=pki.other_client_key_file,
    )
    with pytest.raises(ValueError, match="cannot load the client certificate"):
        private_backend(mismatched)


def test_secrets_stay_out_of_repr() -> None:
    settings = PrivateOptions(url="https://ims.internal", auth="bearer", token=TOKEN)
    assert TOKEN not in repr(settings)
