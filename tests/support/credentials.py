"""What the credential tests share: an old and a new key of one account, an emulator that accepts both,
key files rotated as the kubelet updates a mounted Secret, and the tencent backend built from options."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from moderation.v1.moderation_service_pb2 import ModerateImageRequest

from backends.base import Backend
from backends.plugin import BuildContext
from backends.tencent.plugin import TENCENT, TencentOptions
from emulator import EmulatorConfig, ImsEmulator
from emulator.images import make_png

OLD_ID, OLD_KEY = "AKIDold" + "a1" * 8, "old-key-" + "b2" * 8
NEW_ID, NEW_KEY = "AKIDnew" + "c3" * 8, "new-key-" + "d4" * 8
PNG = make_png(256, 256)
REQUEST = ModerateImageRequest(content=PNG)


@pytest.fixture
def ims() -> Iterator[ImsEmulator]:
    config = EmulatorConfig(secret_id=OLD_ID, secret_key=OLD_KEY, keys={NEW_ID: NEW_KEY})
    with ImsEmulator(config) as emulator:
        yield emulator


def write_secret_dir(root: Path, secret_id: str, secret_key: str) -> None:
    """As the kubelet updates a mounted Secret: a new timestamped directory, then one symlink swap."""
    version = root / f"..{time.monotonic_ns()}"
    version.mkdir()
    (version / "secret_id").write_text(secret_id + "\n")
    (version / "secret_key").write_text(secret_key + "\n")
    link = root / "..data"
    staging = root / "..data_tmp"
    staging.symlink_to(version.name)
    os.replace(staging, link)
    for name in ("secret_id", "secret_key"):
        if not (root / name).is_symlink():
            (root / name).symlink_to(f"..data/{name}")


def file_options(ims: ImsEmulator, root: Path) -> TencentOptions:
    return TencentOptions.from_environment(
        {
            "TENCENTCLOUD_SECRET_ID_FILE": str(root / "secret_id"),
            "TENCENTCLOUD_SECRET_KEY_FILE": str(root / "secret_key"),
            "IMS_ENDPOINT": ims.url,
        }
    )


def make(options: TencentOptions) -> Backend:
    return TENCENT.make("cloud", options, BuildContext())
