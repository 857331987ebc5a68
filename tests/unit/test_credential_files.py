"""Every credential source that reads a file refuses one that is not a regular file, at once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from backends.tencent.credentials import (
    CredentialError,
    Credentials,
    KeyFiles,
    ProfileFile,
    WebIdentity,
    WebIdentityRole,
)


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    os.mkfifo(tmp_path / "fifo")
    return tmp_path / "fifo"


async def test_a_key_file_that_is_a_fifo_is_a_credential_error(fifo: Path) -> None:
    source = KeyFiles(Credentials("id", "key"), secret_key=fifo)
    with pytest.raises(
        CredentialError, match=r"^cannot read the secret key file \(not a regular file but a FIFO\)$"
    ):
        await source.load()


async def test_a_profile_file_that_is_dev_zero_is_a_credential_error() -> None:
    with pytest.raises(
        CredentialError, match=r"^cannot read the profile file \(not a regular file but a character"
    ):
        await ProfileFile(Path("/dev/zero")).load()


async def test_a_web_identity_token_file_that_is_a_fifo_fails_before_any_call_to_sts(fifo: Path) -> None:
    # An endpoint nothing listens on: the token is read, and refused, first.
    role = WebIdentityRole(
        WebIdentity("ap-shanghai", "tke-oidc", fifo, "role"), endpoint="http://127.0.0.1:9/"
    )
    try:
        with pytest.raises(
            CredentialError, match=r"^cannot read the web identity token file \(not a regular"
        ):
            await role.load()
    finally:
        await role.aclose()


async def test_a_profile_file_is_parsed_from_what_was_read(tmp_path: Path) -> None:
    profile = tmp_path / "credentials"
    profile.write_text('[default]\nsecret_id = "AKIDprofile"\nsecret_key = key\n')
    assert await ProfileFile(profile).load() == Credentials("AKIDprofile", "key")
