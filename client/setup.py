"""The build step that generates moderation.v1's stubs from the contract's .proto files.

Run by every build of this distribution (wheel, sdist, editable) before setuptools lists the
packages: the stubs are never committed, and a client built from a checkout needs no `make`.
"""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

from setuptools import Command, setup
from setuptools.command.egg_info import egg_info
from setuptools.command.sdist import sdist

HERE = Path(__file__).resolve().parent
GENERATED = HERE / "generated"
PROTO_PACKAGE = Path("moderation", "v1")


def proto_root() -> Path:
    """Where moderation/v1/*.proto live: the sdist's copy, else the repository's protos/."""
    for root in (HERE / "protos", HERE.parent / "protos"):
        if (root / PROTO_PACKAGE).is_dir():
            return root
    raise FileNotFoundError("no protos/moderation/v1 beside or above the client distribution")


class BuildProtos(Command):
    """Generates moderation/v1/*_pb2.py, *_pb2_grpc.py and *_pb2.pyi into generated/."""

    description = "generate the gRPC stubs from protos/"
    user_options: list[tuple[str, str | None, str]] = []  # noqa: RUF012  # distutils' declaration

    def initialize_options(self) -> None:
        pass

    def finalize_options(self) -> None:
        pass

    def run(self) -> None:
        # Imported here: grpc_tools is a build requirement, not a dependency of the installed client.
        from google import rpc
        from grpc_tools import protoc

        root = proto_root()
        protos = sorted(str(path.relative_to(root)) for path in (root / PROTO_PACKAGE).glob("*.proto"))
        includes = [
            root,
            resources.files("grpc_tools") / "_proto",  # google/protobuf/*.proto
            Path(next(iter(rpc.__path__))).parents[1],  # google/rpc/*.proto
        ]
        output = GENERATED / PROTO_PACKAGE
        shutil.rmtree(GENERATED, ignore_errors=True)
        output.mkdir(parents=True)
        for package in (GENERATED / "moderation", output):
            (package / "__init__.py").touch()
        arguments = [
            "grpc_tools.protoc",
            *(f"-I{include}" for include in includes),
            f"--python_out={GENERATED}",
            f"--pyi_out={GENERATED}",
            f"--grpc_python_out={GENERATED}",
            *protos,
        ]
        if protoc.main(arguments) != 0:
            raise RuntimeError(f"grpc_tools.protoc failed on {protos}")


class EggInfo(egg_info):
    """egg_info starts every build (wheel, sdist, editable) and lists the packages, so the stubs'
    package directory must exist by then."""

    def run(self) -> None:
        self.run_command("build_protos")
        super().run()


class Sdist(sdist):
    """An sdist carries its own copy of the protos, so it builds away from the repository."""

    def make_release_tree(self, base_dir: str, files: list[str]) -> None:
        super().make_release_tree(base_dir, files)
        source = proto_root() / PROTO_PACKAGE
        target = Path(base_dir, "protos", PROTO_PACKAGE)
        target.mkdir(parents=True, exist_ok=True)
        for proto in source.glob("*.proto"):
            shutil.copy2(proto, target / proto.name)


setup(cmdclass={"build_protos": BuildProtos, "egg_info": EggInfo, "sdist": Sdist})
