"""deploy/ files agree with the code."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from pipelines.app import AppConfig

ROOT = Path(__file__).resolve().parents[1]


def test_serve_config_imports_build_app_with_valid_args():
    config = yaml.safe_load((ROOT / "deploy" / "serve_config.yaml").read_text())
    (app,) = config["applications"]
    assert app["import_path"] == "pipelines.app:build_app"
    module, attr = app["import_path"].split(":")
    import importlib

    assert callable(getattr(importlib.import_module(module), attr))
    args = AppConfig.model_validate(app["args"])  # unknown or out-of-range keys fail here
    assert args.profile == "tiny"
    assert args.diffusion.max_ongoing_requests >= args.diffusion.max_batch_size


def test_rayservice_embeds_the_gpu_serve_config():
    gpu = yaml.safe_load((ROOT / "deploy" / "serve_config.gpu.yaml").read_text())
    service = yaml.safe_load((ROOT / "deploy" / "kuberay" / "rayservice.yaml").read_text())
    assert service["apiVersion"] == "ray.io/v1" and service["kind"] == "RayService"
    assert yaml.safe_load(service["spec"]["serveConfigV2"]) == gpu
    (app,) = gpu["applications"]
    args = AppConfig.model_validate(app["args"])
    assert args.profile == "gpu" and args.diffusion.num_gpus == 1 and args.llm.num_gpus == 1

    cluster = service["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["rayVersion"] == "2.60.0"
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    assert set(groups) == {"diffusion-gpu", "llm-gpu"}
    # each model deployment is pinned to its worker group by a custom resource only that group advertises
    for group, opts in (("diffusion-gpu", args.diffusion), ("llm-gpu", args.llm)):
        g = groups[group]
        advertised = json.loads(json.loads(g["rayStartParams"]["resources"]))
        assert set(opts.resources) == set(advertised)
        limits = g["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert limits["nvidia.com/gpu"] >= opts.num_gpus
        assert g["minReplicas"] <= g["maxReplicas"] and g["maxReplicas"] >= opts.max_replicas
    assert "nvidia.com/gpu" not in str(cluster["headGroupSpec"])


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
