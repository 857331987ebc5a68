"""The `local` backend type: real offline models, in-process. Its models load only when one is built."""

from __future__ import annotations

from backends.base import Backend
from backends.local.settings import LocalSettings
from backends.plugin import BackendType, BuildContext

__all__ = ["LOCAL"]


def build(name: str, options: LocalSettings, context: BuildContext) -> Backend:
    # Imported here: the models pull in onnxruntime, OpenCV and friends.
    from backends.local.backend import LocalBackend

    return LocalBackend(options, name=name)


LOCAL = BackendType(
    name="local",
    summary="real offline moderation with models that ship inside their wheels, on the CPU",
    options=LocalSettings,
    build=build,
    # A routed local backend reads the MODERATION_LOCAL_* variables; its table may override them.
    table_extends_environment=True,
)
