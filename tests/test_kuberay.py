"""deploy/kuberay/ against KubeRay's own schema and the operations it promises: the RayService validates against the
RayService CRD's OpenAPI v3 schema (KubeRay v1.7.0, vendored in tests/data) with unknown fields refused, as
`kubectl apply --validate=strict` would; the head survives a restart through GCS fault tolerance on an external Redis
whose password is a Secret; every container gets the object store's credentials from a Secret; the head's dashboard
knows where Grafana and Prometheus are. No cluster is needed."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "tests" / "data" / "kuberay_rayservice_crd_v1.7.0.json"
KUBERAY = ROOT / "deploy" / "kuberay"
S3_KEYS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}


def strict(node):
    """The CRD schema with ``additionalProperties: false`` on every object that lists its properties and does not
    preserve unknown fields: Kubernetes would silently prune a misspelt field, strict validation refuses it."""
    if isinstance(node, dict):
        node = {k: strict(v) for k, v in node.items()}
        if ("properties" in node and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")):
            node["additionalProperties"] = False
        return node
    if isinstance(node, list):
        return [strict(v) for v in node]
    return node


@pytest.fixture(scope="module")
def validator():
    schema = strict(json.loads(SCHEMA.read_text()))
    return jsonschema.Draft202012Validator(schema)


def rayservice() -> dict:
    return yaml.safe_load((KUBERAY / "rayservice.yaml").read_text())


def containers(service: dict) -> list[dict]:
    cluster = service["spec"]["rayClusterConfig"]
    templates = [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]
    return [c for t in templates for c in t["spec"]["containers"]]


def env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def test_the_rayservice_validates_against_kuberays_crd_schema(validator):
    errors = sorted(validator.iter_errors(rayservice()), key=lambda e: list(e.absolute_path))
    assert not errors, [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}" for e in errors]


@pytest.mark.parametrize("path,bad", [
    (("spec", "rayClusterConfig", "gcsFaultToleranceOptions", "redisAdress"), "redis:6379"),  # misspelt field
    (("spec", "rayClusterConfig", "gcsFaultToleranceOptions", "backend"), "etcd"),  # not in the enum
    (("spec", "rayClusterConfig", "workerGroupSpecs", 0, "replicas"), "one"),  # wrong type
])
def test_the_schema_check_catches_a_broken_manifest(validator, path, bad):
    """The check can fail: a typo, a value outside an enum, a wrong type each give an error."""
    service = copy.deepcopy(rayservice())
    node = service
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = bad
    assert list(validator.iter_errors(service))


def test_gcs_fault_tolerance_uses_an_external_redis_with_a_secret_password():
    """The head can restart without losing the Serve apps: GCS state lives in Redis (KubeRay's
    gcsFaultToleranceOptions), the password comes from a Secret, and deploy/kuberay/redis.yaml provides that Redis."""
    ft = rayservice()["spec"]["rayClusterConfig"]["gcsFaultToleranceOptions"]
    ref = ft["redisPassword"]["valueFrom"]["secretKeyRef"]
    redis = {d["kind"]: d for d in yaml.safe_load_all((KUBERAY / "redis.yaml").read_text()) if d}
    service = redis["Service"]
    host, port = ft["redisAddress"].rsplit(":", 1)
    assert host == service["metadata"]["name"] and int(port) in {p["port"] for p in service["spec"]["ports"]}
    (server,) = redis["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert env(server)["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == ref  # one Secret for both sides
    assert "--requirepass" in " ".join(server["args"]) and "--appendonly yes" in " ".join(server["args"])
    assert "Secret" not in redis  # no password is committed: the operator creates it (see redis.yaml)


def test_every_container_reads_object_store_credentials_from_a_secret():
    """The s3:// store is written from whichever node runs the ingress (and the renderer): every container has the
    credentials, from a Secret, never a literal value."""
    for container in containers(rayservice()):
        variables = env(container)
        for name in S3_KEYS:
            assert "value" not in variables[name], name
            assert variables[name]["valueFrom"]["secretKeyRef"]["name"] == "promptbeam-object-store", name


def test_the_head_dashboard_knows_grafana_and_prometheus():
    head = rayservice()["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    variables = env(head)
    for name in ("RAY_GRAFANA_HOST", "RAY_PROMETHEUS_HOST"):
        assert variables[name]["value"].startswith("http://"), name
    assert variables["RAY_PROMETHEUS_HOST"]["value"].endswith(":9090")
