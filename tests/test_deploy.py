"""deploy/ files agree with the code: Serve configs validate against the app and Ray's schema, the args hold only
the code path, switching models is a YAML edit, the RayService embeds the GPU config."""

from __future__ import annotations

import copy
import inspect
import json
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError
from ray.serve._private.deploy_utils import get_app_code_version
from ray.serve.schema import ServeDeploySchema

from pipelines.app import AppConfig, IngressConfig, build_app
from pipelines.records import ModelsRecord
from serving.deployments import BATCHES_HELD, DiffusionBatchConfig

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p.name for p in (ROOT / "deploy").glob("serve_config*.yaml"))


def load(name: str) -> dict:
    return yaml.safe_load((ROOT / "deploy" / name).read_text())


def deployments(application: dict) -> dict[str, dict]:
    return {d["name"]: d for d in application["deployments"]}


@pytest.mark.parametrize("name", CONFIGS)
def test_serve_config_validates_against_the_app_and_rays_schema(name):
    config = load(name)
    ServeDeploySchema.model_validate(config)  # Ray's own schema: unknown deployment options fail here
    (app,) = config["applications"]
    assert app["import_path"] == "pipelines.app:build_app"
    assert len(inspect.signature(build_app).parameters) == 1  # Serve refuses builders with more parameters
    args = AppConfig.model_validate(app["args"])  # unknown or out-of-range keys fail here
    preset = args.resolve()
    deps = deployments(app)  # which deployments the app builds, and their GPUs: tests/test_serve_configs.py
    batching = DiffusionBatchConfig.model_validate(deps["diffusion"]["user_config"])
    IngressConfig.model_validate(deps["ingress"]["user_config"])
    assert batching.max_batch_size <= preset.diffusion.max_batch_size  # the replica's reconfigure would refuse it
    assert deps["diffusion"]["max_ongoing_requests"] >= batching.max_batch_size
    # graceful shutdown sized for the batches a replica holds, at the preset's slowest batch time
    held = -(-deps["diffusion"]["max_ongoing_requests"] // batching.max_batch_size)
    assert deps["diffusion"]["graceful_shutdown_timeout_s"] >= held * preset.batch_seconds
    assert held == BATCHES_HELD


def test_app_args_refuse_serve_options():
    """Replicas and autoscaling are not app args: putting them there is an error, not a silent redeploy."""
    with pytest.raises(ValidationError, match="max_replicas"):
        AppConfig.model_validate({"preset": "tiny", "diffusion": {"max_replicas": 4}})
    with pytest.raises(ValidationError, match="max_running_campaigns"):
        AppConfig.model_validate({"preset": "tiny", "max_running_campaigns": 4})


@pytest.mark.parametrize("name", CONFIGS)
def test_changing_max_replicas_keeps_the_apps_code_version(name):
    """Ray's code version of an app hashes its import path, runtime env and args: editing `deployments:` (replicas,
    batching) keeps it, so Serve updates in place; editing args (another model) changes it."""
    config = ServeDeploySchema.model_validate(load(name))
    (app,) = config.applications
    scaled = copy.deepcopy(app)
    for d in scaled.deployments:
        if d.name == "diffusion":
            d.autoscaling_config = {**d.autoscaling_config, "max_replicas": d.autoscaling_config["max_replicas"] + 5}
            d.user_config = {**d.user_config, "max_batch_size": 4}
    assert get_app_code_version(scaled) == get_app_code_version(app)
    other_model = copy.deepcopy(app)
    other_model.args = {**app.args, "diffusion": {"model": "black-forest-labs/FLUX.1-schnell"}}
    assert get_app_code_version(other_model) != get_app_code_version(app)


def test_gpu_config_shows_switching_models_by_editing_yaml():
    text = (ROOT / "deploy" / "serve_config.gpu.yaml").read_text()
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if "# --- example:" in line)
    end = next(i for i in range(start + 1, len(lines)) if lines[i].strip() == "# ---")
    example = yaml.safe_load("\n".join(line.strip()[2:] for line in lines[start + 1 : end]))
    (app,) = yaml.safe_load(text)["applications"]
    shipped = AppConfig.model_validate(app["args"]).resolve()
    switched = AppConfig.model_validate({**app["args"], **example}).resolve()
    assert (shipped.diffusion.model, switched.diffusion.model) == ("stabilityai/sd-turbo",
                                                                    "black-forest-labs/FLUX.1-schnell")
    assert (switched.defaults.width, switched.diffusion.max_batch_size, switched.llm.tensor_parallel_size) == (1024, 4, 2)
    assert switched.llm.gpu_memory_utilization == shipped.llm.gpu_memory_utilization  # untouched fields stay
    assert ModelsRecord.of(switched).identity() != ModelsRecord.of(shipped).identity()


def test_rayservice_embeds_the_gpu_serve_config():
    gpu = load("serve_config.gpu.yaml")
    service = yaml.safe_load((ROOT / "deploy" / "kuberay" / "rayservice.yaml").read_text())
    assert service["apiVersion"] == "ray.io/v1" and service["kind"] == "RayService"
    assert yaml.safe_load(service["spec"]["serveConfigV2"]) == gpu
    (app,) = gpu["applications"]
    assert AppConfig.model_validate(app["args"]).preset == "gpu"
    deps = deployments(app)

    cluster = service["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["rayVersion"] == "2.60.0"
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    assert set(groups) == {"diffusion-gpu", "llm-gpu"}
    # each model deployment is pinned to its worker group by a custom resource only that group advertises
    # (the LLM, on Ray Serve LLM, asks through its placement group's bundles: each carries the group's resource)
    for group, name in (("diffusion-gpu", "diffusion"), ("llm-gpu", "llm")):
        g = groups[group]
        asks = deps[name].get("placement_group_bundles") or [{"GPU": deps[name]["ray_actor_options"]["num_gpus"],
                                                              **deps[name]["ray_actor_options"]["resources"]}]
        advertised = json.loads(json.loads(g["rayStartParams"]["resources"]))
        limits = g["template"]["spec"]["containers"][0]["resources"]["limits"]
        for ask in asks:
            assert set(ask) - {"CPU", "GPU"} == set(advertised)
            assert limits["nvidia.com/gpu"] >= ask["GPU"] == 1
        assert g["minReplicas"] <= g["maxReplicas"] and g["maxReplicas"] >= deps[name]["autoscaling_config"]["max_replicas"]
    assert "nvidia.com/gpu" not in str(cluster["headGroupSpec"])


def test_every_rayservice_container_reads_the_api_token_from_a_secret():
    """The configs bind 0.0.0.0, where the ingress refuses to start without a token; Ray may place the ingress on any
    node, so every container gets it, from a Kubernetes Secret (never a literal)."""
    service = yaml.safe_load((ROOT / "deploy" / "kuberay" / "rayservice.yaml").read_text())
    cluster = service["spec"]["rayClusterConfig"]
    pods = [cluster["headGroupSpec"]] + cluster["workerGroupSpecs"]
    for pod in pods:
        for container in pod["template"]["spec"]["containers"]:
            env = {e["name"]: e for e in container.get("env", [])}
            assert env["PROMPTBEAM_API_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "promptbeam-api-token",
                                                                               "key": "token"}, container["name"]
            assert "value" not in env["PROMPTBEAM_API_TOKEN"]
    for name in ("serve_config.yaml", "serve_config.gpu.yaml"):
        assert load(name)["http_options"]["host"] == "0.0.0.0"  # hence the token


def test_prometheus_scrapes_rays_service_discovery_file():
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["file_sd_configs"][0]["files"] == ["/tmp/ray/prom_metrics_service_discovery.json"]


def test_grafana_provisioning_points_at_the_dashboard_folder():
    ds = yaml.safe_load((ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yaml").read_text())
    assert ds["datasources"][0]["type"] == "prometheus"
    dash = yaml.safe_load((ROOT / "deploy" / "grafana" / "provisioning" / "dashboards" / "promptbeam.yaml").read_text())
    assert dash["providers"][0]["type"] == "file"
    board = json.loads((ROOT / "deploy" / "grafana" / "dashboards" / "promptbeam.json").read_text())
    assert board["uid"] == "promptbeam"


def test_rayservice_gpu_workers_share_a_model_cache_volume():
    """Every GPU worker mounts the model-cache claim and points HF_HOME into it, so a new pod does not download the
    models again; the claim ships in deploy/ and is shareable across nodes."""
    service = yaml.safe_load((ROOT / "deploy" / "kuberay" / "rayservice.yaml").read_text())
    claim = yaml.safe_load((ROOT / "deploy" / "kuberay" / "model-cache.yaml").read_text())
    assert claim["kind"] == "PersistentVolumeClaim" and claim["spec"]["accessModes"] == ["ReadWriteMany"]
    for group in service["spec"]["rayClusterConfig"]["workerGroupSpecs"]:
        pod = group["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        (container,) = pod["containers"]
        (mount,) = [m for m in container["volumeMounts"]
                    if volumes[m["name"]].get("persistentVolumeClaim", {}).get("claimName") == claim["metadata"]["name"]]
        env = {e["name"]: e.get("value") for e in container["env"]}  # secrets come by valueFrom
        assert Path(env["HF_HOME"]).is_relative_to(mount["mountPath"]), (group["groupName"], env, mount)


def test_podmonitor_scrapes_every_ray_pod_on_its_metrics_port():
    """kube-prometheus-stack discovery: the PodMonitor's selector matches the head and every worker pod template,
    and the port it scrapes is one each Ray container declares and exports metrics on."""
    service = yaml.safe_load((ROOT / "deploy" / "kuberay" / "rayservice.yaml").read_text())
    (monitor,) = list(yaml.safe_load_all((ROOT / "deploy" / "kuberay" / "monitoring.yaml").read_text()))
    assert (monitor["apiVersion"], monitor["kind"]) == ("monitoring.coreos.com/v1", "PodMonitor")
    selector = monitor["spec"]["selector"]["matchLabels"]
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    cluster = service["spec"]["rayClusterConfig"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    for group in groups:
        labels = group["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), labels
        (container,) = group["template"]["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert str(ports[endpoint["port"]]) == group["rayStartParams"]["metrics-export-port"]
