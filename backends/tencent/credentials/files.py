"""Credentials kept in files: the `*_FILE` key files, and the official SDK's profile file.

Both are re-read when they change, told by a fingerprint of each file (device, inode, size and
modification time, through symlinks): Kubernetes updates a mounted Secret by swapping a symlink, so
the inode changes even when the size and the second of the change do not.
"""

from __future__ import annotations

import asyncio
import configparser
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from backends.tencent.credentials.model import CredentialError, Credentials
from common.files import SECRET_FILE_LIMIT, UnreadableFile, read_text_file

__all__ = ["PROFILE_PATHS", "KeyFiles", "ProfileFile", "profile_path", "read_credential_file"]

# Where the official SDK looks for its profile, in order (ProfileCredential).
PROFILE_PATHS = (Path("~/.tencentcloud/credentials"), Path("/etc/tencentcloud/credentials"))

Fingerprint = tuple[tuple[int, int, int, int] | None, ...]


def _fingerprint(paths: Sequence[Path]) -> Fingerprint:
    def one(path: Path) -> tuple[int, int, int, int] | None:
        try:
            stat = path.stat()
        except OSError:
            return None
        return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)

    return tuple(one(path) for path in paths)


def read_credential_file(path: Path, what: str) -> str:
    """The text of a key, token or profile file, stripped; CredentialError naming `what` if it cannot
    be read (not a regular file, too large, not UTF-8) or is empty."""
    try:
        value = read_text_file(path, SECRET_FILE_LIMIT).strip()
    except UnreadableFile as problem:
        raise CredentialError(f"cannot read the {what} file ({problem})") from None
    if not value:
        raise CredentialError(f"the {what} file is empty")
    return value


@dataclass(frozen=True)
class KeyFiles:
    """`TENCENTCLOUD_SECRET_ID_FILE`, `TENCENTCLOUD_SECRET_KEY_FILE`, `TENCENTCLOUD_TOKEN_FILE`: each
    part of the pair from its file if it has one, else the value given (a variable beside the files)."""

    values: Credentials
    secret_id: Path | None = None
    secret_key: Path | None = None
    token: Path | None = None
    name = "file"

    @property
    def _paths(self) -> tuple[Path, ...]:
        return tuple(path for path in (self.secret_id, self.secret_key, self.token) if path is not None)

    def version(self) -> Fingerprint:
        return _fingerprint(self._paths)

    async def load(self) -> Credentials:
        # Off the event loop: a mounted volume can be slow to answer.
        return await asyncio.to_thread(self.read)

    async def aclose(self) -> None:
        """Nothing held open."""

    def read(self) -> Credentials:
        """The pair as the files hold it now; read until two passes agree, so that a rotation caught
        between reading the id and the key never yields a torn pair."""
        for _ in range(3):
            before = self.version()
            credentials = Credentials(
                read_credential_file(self.secret_id, "secret id")
                if self.secret_id
                else self.values.secret_id,
                read_credential_file(self.secret_key, "secret key")
                if self.secret_key
                else self.values.secret_key,
                read_credential_file(self.token, "token") if self.token else self.values.token,
            )
            if self.version() == before:
                return credentials
        raise CredentialError("the key files kept changing while being read")


def profile_path(candidates: Sequence[Path] = PROFILE_PATHS) -> Path | None:
    """The first profile file that exists, as the official SDK chooses it."""
    for candidate in candidates:
        path = candidate.expanduser()
        if path.is_file():
            return path
    return None


@dataclass(frozen=True)
class ProfileFile:
    """The `[default]` section's `secret_id` and `secret_key` of the SDK's INI profile file."""

    path: Path
    name = "profile"

    def version(self) -> Fingerprint:
        return _fingerprint((self.path,))

    async def load(self) -> Credentials:
        return await asyncio.to_thread(self.read)

    async def aclose(self) -> None:
        """Nothing held open."""

    def read(self) -> Credentials:
        parser = configparser.ConfigParser(interpolation=None)
        text = read_credential_file(self.path, "profile")
        try:
            parser.read_string(text)
        except configparser.Error:
            # configparser's messages quote the offending line, which may hold the key.
            raise CredentialError("the profile file is not a valid INI file") from None
        section = parser["default"] if parser.has_section("default") else None
        secret_id = (section.get("secret_id", "") if section else "").strip().strip('"')
        secret_key = (section.get("secret_key", "") if section else "").strip().strip('"')
        if not (secret_id and secret_key):
            raise CredentialError("the profile file has no [default] secret_id and secret_key")
        return Credentials(secret_id, secret_key)
