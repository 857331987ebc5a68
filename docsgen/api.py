"""The proto API reference: every service, method, message and enum of `protos/moderation/`, with the
comments written in the .proto files, read from descriptors that protoc compiles with source info."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from google.protobuf import descriptor_pb2

__all__ = ["PROTOS", "reference"]

PROTOS = Path(__file__).resolve().parent.parent / "protos"
_TYPES = {
    value: name.removeprefix("TYPE_").lower()
    for name, value in descriptor_pb2.FieldDescriptorProto.Type.items()
}
# Paths into FileDescriptorProto, as SourceCodeInfo numbers them.
_MESSAGE, _ENUM, _SERVICE, _FIELD, _VALUE, _METHOD, _NESTED = 4, 5, 6, 2, 2, 2, 3


def _compiled() -> descriptor_pb2.FileDescriptorSet:
    import google.rpc

    includes = Path(google.rpc.__path__[0]).parent.parent
    files = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.glob("moderation/*/*.proto"))
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "set.binpb"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "grpc_tools.protoc",
                f"-I{PROTOS}",
                f"-I{includes}",
                "--include_source_info",
                f"--descriptor_set_out={out}",
                *files,
            ],
            check=True,
        )
        return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def _comments(proto: descriptor_pb2.FileDescriptorProto) -> dict[tuple[int, ...], str]:
    return {
        tuple(location.path): " ".join(location.leading_comments.split())
        for location in proto.source_code_info.location
        if location.leading_comments.strip()
    }


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _field_type(field: descriptor_pb2.FieldDescriptorProto) -> str:
    name = field.type_name.lstrip(".") if field.type_name else _TYPES[field.type]
    repeated = field.label == descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED
    return f"repeated {name}" if repeated else name


def _message(
    message: descriptor_pb2.DescriptorProto,
    path: tuple[int, ...],
    prefix: str,
    notes: dict[tuple[int, ...], str],
) -> Iterator[str]:
    name = f"{prefix}{message.name}"
    yield f"#### `{name}`\n"
    if notes.get(path):
        yield f"{notes[path]}\n"
    if message.field:
        yield "| field | number | type | meaning |\n|---|---|---|---|"
        for index, field in enumerate(message.field):
            note = _cell(notes.get((*path, _FIELD, index), ""))
            yield f"| `{field.name}` | {field.number} | `{_field_type(field)}` | {note} |"
        yield ""
    for index, nested in enumerate(message.nested_type):
        if not nested.options.map_entry:
            yield from _message(nested, (*path, _NESTED, index), f"{name}.", notes)
    for index, enum in enumerate(message.enum_type):
        yield from _enum(enum, (*path, 4, index), f"{name}.", notes)


def _enum(
    enum: descriptor_pb2.EnumDescriptorProto,
    path: tuple[int, ...],
    prefix: str,
    notes: dict[tuple[int, ...], str],
) -> Iterator[str]:
    yield f"#### `{prefix}{enum.name}` (enum)\n"
    if notes.get(path):
        yield f"{notes[path]}\n"
    yield "| value | number | meaning |\n|---|---|---|"
    for index, value in enumerate(enum.value):
        yield f"| `{value.name}` | {value.number} | {_cell(notes.get((*path, _VALUE, index), ''))} |"
    yield ""


def _file(proto: descriptor_pb2.FileDescriptorProto) -> Iterator[str]:
    notes = _comments(proto)
    yield f"## `{proto.package}` ({proto.name})\n"
    for s_index, service in enumerate(proto.service):
        yield f"### Service `{proto.package}.{service.name}`\n"
        if notes.get((_SERVICE, s_index)):
            yield f"{notes[(_SERVICE, s_index)]}\n"
        yield "| method | request | response | meaning |\n|---|---|---|---|"
        for m_index, method in enumerate(service.method):
            request = ("stream " if method.client_streaming else "") + method.input_type.lstrip(".")
            response = ("stream " if method.server_streaming else "") + method.output_type.lstrip(".")
            note = _cell(notes.get((_SERVICE, s_index, _METHOD, m_index), ""))
            yield f"| `{method.name}` | `{request}` | `{response}` | {note} |"
        yield ""
    yield "### Messages\n"
    for index, message in enumerate(proto.message_type):
        yield from _message(message, (_MESSAGE, index), "", notes)
    for index, enum in enumerate(proto.enum_type):
        yield from _enum(enum, (_ENUM, index), "", notes)


def reference(files: Sequence[str] | None = None) -> str:
    compiled = _compiled()
    ours = [f for f in compiled.file if f.name.startswith("moderation/")]
    return "\n".join(line for proto in ours for line in _file(proto)).rstrip()
