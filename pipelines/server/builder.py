"""The builder: the Serve application from an :class:`AppConfig`. The one place that applies ``serve.deployment`` to
the ingress, merges a config's deployment options over this code's defaults, and chooses the LLM backend (the
deployment that serves the preset's LLM, and the client the ingress talks to it with).

``deploy/serve_config.yaml`` imports :func:`build_app` (through ``pipelines.app``); ``promptbeam run`` and
``promptbeam serve``, tests and benchmarks call :func:`compose_app` (the same app, with Serve options given in Python).
Serve applies the options of the config's ``deployments:`` section in place (batching and the ingress's limits reach
running replicas as ``user_config``), without redeploying the app or reloading a model.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray import serve

from pipelines.server.configs import DEPLOYMENTS, AppConfig, IngressConfig
from pipelines.server.ingress import CampaignIngress
from pipelines.server.planner import PlannerWorker
from serving.clients import ServeLanguageModel
from serving.deployments import build_diffusion_deployment, build_llm_deployment, llm_options, merge_options
from serving.presets import ModelPreset, default_tiny_dir, ensure_models, import_object

INGRESS_OPTIONS: dict[str, Any] = {
    "num_replicas": 1,  # campaigns run as tasks inside the ingress: one replica owns them
    "ray_actor_options": {"num_cpus": 0},
    "max_ongoing_requests": 256,
    "user_config": IngressConfig().model_dump(),
    "graceful_shutdown_timeout_s": 30,
}
PLANNER_OPTIONS: dict[str, Any] = {
    "ray_actor_options": {"num_cpus": 0},  # it waits on the models; Ray still spreads its replicas over the nodes
    "max_ongoing_requests": 64,  # intents searched at once per worker (each mostly waits)
    "autoscaling_config": {"min_replicas": 1, "initial_replicas": 1, "max_replicas": 4,
                           "target_ongoing_requests": 32},
    "graceful_shutdown_timeout_s": 30,
}


def build_app(args: dict[str, Any] | AppConfig | None = None):
    """The Serve application from a Serve config's ``args`` (an :class:`AppConfig` or its dict). Serve requires a
    builder with exactly this one parameter; the config's ``deployments:`` section sets the deployment options."""
    return compose_app(args if isinstance(args, AppConfig) else AppConfig.model_validate(args or {}))


def compose_app(config: AppConfig, deployments: dict[str, dict[str, Any]] | None = None):
    """The Serve application for Python callers (the CLI, tests, benchmarks). ``deployments`` takes per-deployment
    Serve options keyed ``diffusion``/``llm``/``ingress``, in the shape of a Serve config's ``deployments:`` entries,
    merged over this code's defaults (the same options a Serve config would set)."""
    deployments = deployments or {}
    names = [*DEPLOYMENTS, *config.renderers]
    unknown = set(deployments) - set(names)
    if unknown:
        raise ValueError(f"unknown deployments {sorted(unknown)}; the app has {', '.join(map(repr, names))}")
    if "planner" in deployments and not config.planner_workers:
        raise ValueError("options for the 'planner' deployment, but planner_workers is off: set it in the args")
    # Replicas may run in another working directory: hand them absolute local paths.
    updates: dict[str, Any] = {"tiny_dir": str(Path(config.tiny_dir or default_tiny_dir()).resolve())}
    if "://" not in config.store_root:
        updates["store_root"] = str(Path(config.store_root).resolve())
    config = config.model_copy(update=updates)
    preset = config.resolve()
    ensure_models(preset)
    diffusion = build_diffusion_deployment(
        preset.diffusion, import_object(config.engines.diffusion), on_gpu=preset.on_gpu,
        batch_seconds=preset.batch_seconds, options=deployments.get("diffusion"),
    )
    renderers = {}  # more renderer deployments (model A/B, a campaign's `renderer`), each with its own options
    for name in config.renderers:
        other = config.resolve(name)
        ensure_models(other)
        renderers[name] = build_diffusion_deployment(
            other.diffusion, import_object(config.engines.diffusion), on_gpu=other.on_gpu,
            batch_seconds=other.batch_seconds, options=deployments.get(name), name=name)
    llm, llm_client = llm_backend(config, preset, deployments.get("llm"))
    planner = None
    if config.planner_workers:
        planner = serve.deployment(PlannerWorker, name="planner",
                                   **merge_options(PLANNER_OPTIONS, deployments.get("planner"))
                                   ).bind(diffusion, llm, config, llm_client, renderers=renderers)
    ingress = serve.deployment(CampaignIngress, name="ingress",
                               **merge_options(INGRESS_OPTIONS, deployments.get("ingress")))
    return ingress.bind(diffusion, llm, config, llm_client, planner=planner, renderers=renderers)


def llm_backend(config: AppConfig, preset: ModelPreset, options: dict[str, Any] | None
                ) -> tuple[Any, Callable[[Any], Any]]:
    """(the LLM deployment, how the ingress wraps its handle) for ``config.llm_backend``; (None, ...) when every role
    has an OpenAI-compatible endpoint and no LLM is served."""
    if not preset.needs_llm:
        return None, ServeLanguageModel  # never called: the ingress gets no LLM handle
    if config.llm_backend == "ray_serve_llm":
        from serving.serve_llm import ServeLLMLanguageModel, build_serve_llm_deployment

        deployment = build_serve_llm_deployment(preset.llm, on_gpu=preset.on_gpu,
                                                options=merge_options(llm_options(on_gpu=preset.on_gpu), options))
        return deployment, functools.partial(ServeLLMLanguageModel, model_id=preset.llm.model)
    deployment = build_llm_deployment(preset.llm, import_object(config.engines.llm), on_gpu=preset.on_gpu,
                                      options=options)
    return deployment, ServeLanguageModel
