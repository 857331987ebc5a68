"""`python -m emulator` as users run it: a real process, real TLS on loopback, flags checked at start."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import trustme

from emulator.images import make_png

PROJECT_ROOT = Path(__file__).resolve().parents[1]
TOKEN = "emulator-cli-bearer-token-0123456789"
IMS_HEADERS = {
    "Content-Type": "application/json",
    "X-TC-Action": "ImageModeration",
    "X-TC-Version": "2020-12-29",
    "X-TC-Region": "ap-guangzhou",
}


@dataclass(frozen=True)
class Pki:
    ca: trustme.CA
    client: trustme.LeafCert
    ca_file: Path
    server_cert_file: Path
    server_key_file: Path

    def client_context(self, *, with_certificate: bool) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        if with_certificate:
            self.client.configure_cert(context)
        return context


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1")
    pki = Pki(
        ca=ca,
        client=ca.issue_cert("gateway.example.test"),
        ca_file=directory / "ca.pem",
        server_cert_file=directory / "server.pem",
        server_key_file=directory / "server.key",
    )
    ca.cert_pem.write_to_path(str(pki.ca_file))
    server.cert_chain_pems[0].write_to_path(str(pki.server_cert_file))
    server.private_key_pem.write_to_path(str(pki.server_key_file))
    return pki


def _run(arguments: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    """`python -m emulator` with `env` on top of this environment less any IMS_EMULATOR_* variable."""
    clean = {name: value for name, value in os.environ.items() if not name.startswith("IMS_EMULATOR_")}
    return subprocess.Popen(
        [sys.executable, "-m", "emulator", *arguments],
        cwd=PROJECT_ROOT,
        env={**clean, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@dataclass
class Served:
    url: str
    stderr: str = ""


@contextlib.contextmanager
def serving(arguments: list[str], env: dict[str, str]) -> Iterator[Served]:
    """The emulator process until SIGTERM, which must end it with status 0; `stderr` is its log."""
    process = _run(["--port", "0", *arguments], env)
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        prefix = "ims-emulator listening on "
        assert line.startswith(prefix), f"no readiness line: {line!r}, {process.stderr}"
        served = Served(url=line.removeprefix(prefix))
        yield served
        process.send_signal(signal.SIGTERM)
        _, served.stderr = process.communicate(timeout=10)
        assert process.returncode == 0
    finally:
        process.kill()
        process.wait()


def moderate(client: httpx.Client, url: str, token: str | None = None) -> httpx.Response:
    body = json.dumps(
        {"FileContent": base64.b64encode(make_png(marker="IMSEMU:Block:Ad:QrCode:99")).decode()}
    )
    headers = IMS_HEADERS if token is None else {**IMS_HEADERS, "Authorization": f"Bearer {token}"}
    return client.post(url, content=body, headers=headers, timeout=5)


def outcome(response: httpx.Response) -> str:
    assert response.status_code == 200
    answer = response.json()["Response"]
    return str(answer["Error"]["Code"] if "Error" in answer else answer["Suggestion"])


def test_https_with_a_bearer_token_on_its_own_path(pki: Pki) -> None:
    arguments = ["--tls-cert", str(pki.server_cert_file), "--tls-key", str(pki.server_key_file)]
    arguments += ["--auth", "bearer", "--path", "/ims/v1"]
    with (
        serving(arguments, {"IMS_EMULATOR_BEARER_TOKEN": TOKEN}) as served,
        httpx.Client(verify=pki.client_context(with_certificate=False)) as client,
        httpx.Client() as untrusting,
    ):
        assert served.url.startswith("https://127.0.0.1:")
        endpoint = served.url + "/ims/v1"
        assert outcome(moderate(client, endpoint, TOKEN)) == "Block"
        assert outcome(moderate(client, endpoint, "not-the-token")) == "AuthFailure.TokenFailure"
        assert outcome(moderate(client, endpoint)) == "AuthFailure.InvalidAuthorization"
        assert moderate(client, served.url + "/", TOKEN).status_code == 404
        with pytest.raises(httpx.ConnectError):
            moderate(untrusting, endpoint, TOKEN)  # the system CAs do not trust the test CA
    assert TOKEN not in served.stderr
    assert "auth bearer, path /ims/v1" in served.stderr


def test_client_certificates_are_required_with_a_client_ca(pki: Pki) -> None:
    arguments = ["--tls-cert", str(pki.server_cert_file), "--tls-key", str(pki.server_key_file)]
    arguments += ["--tls-client-ca", str(pki.ca_file), "--auth", "none"]
    with (
        serving(arguments, {}) as served,
        httpx.Client(verify=pki.client_context(with_certificate=True)) as with_cert,
        httpx.Client(verify=pki.client_context(with_certificate=False)) as without_cert,
    ):
        assert outcome(moderate(with_cert, served.url)) == "Block"
        # TLS 1.3 reports the refused handshake at the first read, so either error may come.
        with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
            moderate(without_cert, served.url)


@pytest.mark.parametrize("stamp", ["request-line", "after-body"])
def test_arrival_stamp_flag_sets_the_mode(stamp: str) -> None:
    with (
        serving(["--auth", "none", "--arrival-stamp", stamp, "--qps", "100"], {}) as served,
        httpx.Client() as client,
    ):
        assert outcome(moderate(client, served.url)) == "Block"
    assert f"arrival stamp {stamp}, qps limit 100" in served.stderr


@pytest.mark.parametrize(
    ("arguments", "env", "message"),
    [
        ([], {}, "--auth tc3 needs --secret-id and --secret-key"),
        (["--auth", "bearer"], {}, "--auth bearer needs --bearer-token"),
        (
            ["--bearer-token", TOKEN],
            {"IMS_EMULATOR_SECRET_ID": "AKID", "IMS_EMULATOR_SECRET_KEY": "k"},
            "only used with --auth bearer",
        ),
        (["--auth", "none", "--tls-cert", "server.pem"], {}, "--tls-cert and --tls-key go together"),
        (["--auth", "none", "--tls-client-ca", "ca.pem"], {}, "--tls-client-ca needs --tls-cert"),
        (["--auth", "none", "--path", "ims/v1"], {}, "--path must be an absolute path"),
        (["--auth", "none", "--qps", "0"], {}, "--qps must be positive"),
        (["--auth", "none", "--fault-http-5xx", "1.5"], {}, "http_5xx"),
        (["--auth", "nobody"], {}, "invalid choice: 'nobody'"),
        (["--auth", "none", "--arrival-stamp", "on-accept"], {}, "invalid choice: 'on-accept'"),
    ],
    ids=[
        "tc3-no-keys",
        "bearer-no-token",
        "token-without-bearer",
        "cert-no-key",
        "client-ca-no-cert",
        "relative-path",
        "zero-qps",
        "fault-over-1",
        "unknown-auth",
        "unknown-arrival-stamp",
    ],
)
def test_a_bad_combination_exits_with_status_2(
    arguments: list[str], env: dict[str, str], message: str
) -> None:
    process = _run(["--port", "0", *arguments], env)
    _, stderr = process.communicate(timeout=10)
    assert process.returncode == 2
    assert message in stderr
    assert stderr.startswith("usage: python -m emulator")
    assert TOKEN not in stderr


def test_unreadable_tls_files_exit_with_status_2(pki: Pki, tmp_path: Path) -> None:
    not_a_key = tmp_path / "server.key"
    not_a_key.write_text("not a key")
    arguments = [
        "--port",
        "0",
        "--auth",
        "none",
        "--tls-cert",
        str(pki.server_cert_file),
        "--tls-key",
        str(not_a_key),
    ]
    process = _run(arguments, {})
    _, stderr = process.communicate(timeout=10)
    assert process.returncode == 2
    assert "cannot load the TLS files" in stderr
