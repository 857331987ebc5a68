"""The standard gRPC health check (grpc.health.v1.Health/Check), without grpcio-health-checking.

The two messages are built from their descriptor in a pool of their own, so this client needs no
package beyond grpcio and protobuf, and never clashes with grpcio-health-checking's generated module
in a process that has both (the gateway's).
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

CHECK_METHOD = "/grpc.health.v1.Health/Check"
SERVING = "SERVING"
# The health protocol's ServingStatus values, as grpc/health/v1/health.proto numbers them.
_STATUSES = {"UNKNOWN": 0, SERVING: 1, "NOT_SERVING": 2, "SERVICE_UNKNOWN": 3}


def _messages() -> tuple[Any, Any]:
    # Any: classes made at run time have fields mypy cannot see.
    field = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name="grpc/health/v1/health.proto", package="grpc.health.v1", syntax="proto3"
    )
    request = proto.message_type.add(name="HealthCheckRequest")
    request.field.add(name="service", number=1, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
    response = proto.message_type.add(name="HealthCheckResponse")
    status = response.enum_type.add(name="ServingStatus")
    for name, number in _STATUSES.items():
        status.value.add(name=name, number=number)
    response.field.add(
        name="status",
        number=1,
        type=field.TYPE_ENUM,
        type_name=".grpc.health.v1.HealthCheckResponse.ServingStatus",
        label=field.LABEL_OPTIONAL,
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return (
        message_factory.GetMessageClass(pool.FindMessageTypeByName("grpc.health.v1.HealthCheckRequest")),
        message_factory.GetMessageClass(pool.FindMessageTypeByName("grpc.health.v1.HealthCheckResponse")),
    )


HealthCheckRequest, HealthCheckResponse = _messages()
_NAMES = {number: name for name, number in _STATUSES.items()}


def status_name(response: Any) -> str:
    """SERVING, NOT_SERVING, SERVICE_UNKNOWN or UNKNOWN (also for a value this client does not know)."""
    number: int = response.status
    return _NAMES.get(number, "UNKNOWN")
