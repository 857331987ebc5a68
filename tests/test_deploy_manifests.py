"""deploy/kubernetes/: valid for the Kubernetes versions supported, and true to the gateway it runs.

Schemas: PyPI's kubernetes-validate, strict (unknown fields are errors), offline. Settings: every
variable the manifests set is declared by the gateway, its backends or OpenTelemetry's SDK, and the
whole configuration (environment, ConfigMap, Secret files) loads with the production loader. Probes:
the real port and the health service names a real gateway answers.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import kubernetes_validate
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.sdk import environment_variables as otel_variables

from backends.options import Declared, is_secret, variable
from backends.registry import BACKEND_TYPES
from service.server import SERVICE_NAME
from service.settings import Settings, load_settings
from tests.support.gateway import GatewayFactory

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "deploy" / "kubernetes"
# Native gRPC probes are GA from 1.27; the newest minor kubernetes-validate ships schemas for.
SUPPORTED_VERSIONS = ("1.27.0", f"{kubernetes_validate.latest_version()}.0")
GATEWAY = "moderation-gateway"
SERVING = health_pb2.HealthCheckResponse.SERVING


def documents() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in sorted(MANIFESTS.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for document in yaml.safe_load_all(path.read_text()):
            yield f"{path.name}:{document['kind']}/{document['metadata']['name']}", document


def find(kind: str, name: str = GATEWAY) -> dict[str, Any]:
    (found,) = (d for _, d in documents() if d["kind"] == kind and d["metadata"]["name"] == name)
    return found


def gateway_container() -> dict[str, Any]:
    (container,) = find("Deployment")["spec"]["template"]["spec"]["containers"]
    return dict(container)


def gateway_env() -> dict[str, str]:
    return {entry["name"]: entry["value"] for entry in gateway_container()["env"]}


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
@pytest.mark.parametrize(("where", "document"), list(documents()), ids=[w for w, _ in documents()])
def test_manifest_is_valid_for_supported_kubernetes(
    version: str, where: str, document: dict[str, Any]
) -> None:
    kubernetes_validate.validate(document, version, strict=True)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    files = {p.name for p in MANIFESTS.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files


def declared_variables() -> set[str]:
    """Every variable the gateway and its backends read, and `<VARIABLE>_FILE` for each secret."""
    models: list[type[Declared]] = [Settings, *(kind.options for kind in BACKEND_TYPES.values())]
    names = set()
    for model in models:
        for field in model.model_fields.values():
            name = variable(field)
            if name is not None:
                names.add(name)
                if is_secret(field):
                    names.add(f"{name}_FILE")
    return names


def test_every_variable_set_is_a_real_setting() -> None:
    otel = {value for name, value in vars(otel_variables).items() if name.startswith("OTEL_")}
    unknown = set(gateway_env()) - declared_variables() - otel
    assert not unknown, f"not settings of the gateway, its backends or OpenTelemetry: {sorted(unknown)}"


# Stand-ins for the Secrets an operator creates (docs/guides/deploying.md): the manifests hold none.
SECRETS = {
    "moderation-ims": {"secret-id": "AKIDtest", "secret-key": "test-key"},
    "moderation-redis": {"password": "test-password"},
}
DEPLOYING_GUIDE = ROOT / "docs" / "guides" / "deploying.md"


def mounted_secrets() -> set[str]:
    spec = find("Deployment")["spec"]["template"]["spec"]
    return {volume["secret"]["secretName"] for volume in spec["volumes"] if "secret" in volume}


def test_no_manifest_applies_a_secret() -> None:
    # `kubectl apply -k` would overwrite the real key and password with whatever a Secret here holds.
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    assert [where for where, document in documents() if document["kind"] == "Secret"] == []
    assert "secretGenerator" not in kustomization


def test_the_guide_creates_every_mounted_secret_with_the_keys_mounted() -> None:
    guide = DEPLOYING_GUIDE.read_text()
    created = {
        match.group(1): set(re.findall(r"--from-file=([a-z-]+)=", match.group(2)))
        for match in re.finditer(r"create secret generic (\S+)((?:[^\n]*\\\n)*[^\n]*)", guide)
    }
    assert mounted_secrets() == set(SECRETS)
    assert {name: created.get(name) for name in SECRETS} == {
        name: set(keys) for name, keys in SECRETS.items()
    }


def mounted_files(tmp_path: Path) -> dict[str, Path]:
    """The ConfigMap and Secret volumes written under tmp_path, as {mount path: local folder}."""
    spec = find("Deployment")["spec"]["template"]["spec"]
    sources = {volume["name"]: volume for volume in spec["volumes"]}
    folders = {}
    for mount in gateway_container()["volumeMounts"]:
        volume = sources[mount["name"]]
        if "configMap" in volume:
            data = find("ConfigMap", volume["configMap"]["name"])["data"]
        elif "secret" in volume:
            data = SECRETS[volume["secret"]["secretName"]]
        else:
            continue
        folder = tmp_path / mount["name"]
        folder.mkdir()
        for key, value in data.items():
            (folder / key).write_text(value)
        folders[mount["mountPath"]] = folder
    return folders


def test_the_configuration_loads_as_the_gateway_loads_it(tmp_path: Path) -> None:
    folders = mounted_files(tmp_path)

    def local(text: str) -> str:
        for mount, folder in folders.items():
            text = text.replace(mount + "/", f"{folder}/")
        return text

    for folder in folders.values():
        for file in folder.iterdir():
            file.write_text(local(file.read_text()))
    settings = load_settings({name: local(value) for name, value in gateway_env().items()})
    assert [b.type for b in settings.backends] == ["tencent", "local"]
    assert settings.redis_url is not None
    assert settings.drain_delay > 0  # endpoints update before calls are refused


def test_grace_period_covers_drain_delay_and_grace() -> None:
    env = gateway_env()
    defaults = Settings.model_fields
    drain = float(env.get("MODERATION_DRAIN_DELAY", defaults["drain_delay"].default))
    grace = float(env.get("MODERATION_SHUTDOWN_GRACE", defaults["shutdown_grace"].default))
    period = find("Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert period >= drain + grace + 5, "room for closing the backends and exiting"


def listen_port() -> int:
    match = re.fullmatch(r".*:(\d+)", gateway_env()["MODERATION_LISTEN"])
    assert match
    return int(match.group(1))


def probes() -> dict[str, dict[str, Any]]:
    container = gateway_container()
    return {kind: container[kind] for kind in ("startupProbe", "readinessProbe", "livenessProbe")}


def test_probes_are_native_grpc_on_the_real_port_number() -> None:
    (grpc_port,) = (p for p in gateway_container()["ports"] if p["name"] == "grpc")
    assert grpc_port["containerPort"] == listen_port()
    for kind, probe in probes().items():
        assert probe["grpc"]["port"] == listen_port(), kind
    startup = probes()["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 30, "covers model loading"


async def test_probes_name_health_services_a_real_gateway_serves(make_gateway: GatewayFactory) -> None:
    gateway = await make_gateway()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for kind, probe in probes().items():
            service = probe["grpc"].get("service", "")
            answer = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
            assert answer.status == SERVING, kind
    assert probes()["readinessProbe"]["grpc"]["service"] == SERVICE_NAME


def test_pods_are_non_root_read_only_without_capabilities() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    (user,) = re.findall(r"^USER (\d+):(\d+)$", dockerfile, re.MULTILINE)
    pod = find("Deployment")["spec"]["template"]["spec"]
    context = gateway_container()["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"]
    assert context["runAsNonRoot"]
    assert (context["runAsUser"], context["runAsGroup"]) == tuple(map(int, user))
    assert context["readOnlyRootFilesystem"]
    assert not context["allowPrivilegeEscalation"]
    assert context["capabilities"]["drop"] == ["ALL"]
    mounts = {m["mountPath"]: m for m in gateway_container()["volumeMounts"]}
    assert "readOnly" not in mounts["/tmp"], "the one writable place"
    assert all(m.get("readOnly") for path, m in mounts.items() if path != "/tmp")


def test_deployment_is_a_fleet_spread_and_sized() -> None:
    spec = find("Deployment")["spec"]
    assert spec["replicas"] >= 2
    keys = {c["topologyKey"] for c in spec["template"]["spec"]["topologySpreadConstraints"]}
    assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    resources = gateway_container()["resources"]
    assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}
    assert find("HorizontalPodAutoscaler")["spec"]["minReplicas"] >= 2
    assert find("HorizontalPodAutoscaler")["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert find("PodDisruptionBudget")["spec"]["maxUnavailable"] == 1


def test_service_names_the_grpc_port_with_its_protocol() -> None:
    (port,) = (p for p in find("Service")["spec"]["ports"] if p["name"] == "grpc")
    assert port["appProtocol"] == "kubernetes.io/h2c"
    assert port["port"] == listen_port()
    assert port["targetPort"] == "grpc"


def egress_ports(policy: dict[str, Any]) -> set[int]:
    return {port["port"] for rule in policy["spec"]["egress"] for port in rule["ports"]}


def test_network_policy_lets_callers_in_and_only_ims_redis_and_the_collector_out() -> None:
    policy = find("NetworkPolicy")
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]} == {listen_port(), 9464}
    redis_url = gateway_env()["MODERATION_REDIS_URL"]
    collector = gateway_env()["OTEL_EXPORTER_OTLP_ENDPOINT"]
    assert egress_ports(policy) == {
        53,  # DNS
        443,  # IMS
        int(redis_url.rsplit(":", 1)[1].split("/")[0]),
        int(collector.rsplit(":", 1)[1]),
    }
    assert egress_ports(find("NetworkPolicy", "moderation-redis")) == set()
