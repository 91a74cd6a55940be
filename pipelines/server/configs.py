"""What an operator configures in the Serve app: the code path (:class:`AppConfig`, a Serve config's ``args``) and the
ingress's in-place limits (:class:`IngressConfig`, its ``user_config``). Replicas, autoscaling, resources and batching
are Serve deployment options in the config's ``deployments:`` section (defaults in :mod:`pipelines.server.builder`).
:func:`load_app_config` reads such a file, with the command line's overrides, into both."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agents.messages import MAX_IMAGE_SIDE
from pipelines.records import DEFAULT_RENDERER, MAX_INTENTS
from serving.openai_client import LanguageModelEndpoints
from serving.presets import DiffusionOverrides, LLMOverrides, ModelPreset, RenderDefaultsOverrides, resolve_preset


DEPLOYMENTS = ("diffusion", "llm", "planner", "ingress")
"""The app's own deployments (``renderers`` add more, by their names)."""


class EngineClasses(BaseModel):
    """Engine classes the deployments instantiate, as import paths (tests name fake engines here)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    diffusion: str = Field(default="serving.engines:DiffusionEngine", description="Takes a DiffusionEngineConfig.")
    llm: str = Field(default="serving.engines:LLMEngine", description="Takes an LLMEngineConfig.")


class AppConfig(BaseModel):
    """Arguments of :func:`pipelines.app.build_app` (the ``args:`` block of ``deploy/serve_config*.yaml``): only what
    changes the code path (the models, the engine classes, the LLM backend, the store)."""

    model_config = ConfigDict(extra="forbid")

    preset: str = Field(default="tiny", max_length=4096,
                        description="Model preset: a name in serving/presets/ or a path to a .yaml.")
    diffusion: DiffusionOverrides | None = Field(  # type: ignore[valid-type]
        default=None, description="DiffusionEngineConfig fields over the preset's (model id or directory, dtype, ...)."
    )
    llm: LLMOverrides | None = Field(  # type: ignore[valid-type]
        default=None, description="LLMEngineConfig fields over the preset's."
    )
    defaults: RenderDefaultsOverrides | None = Field(  # type: ignore[valid-type]
        default=None, description="Image defaults (width, height, steps, guidance_scale) over the preset's."
    )
    endpoints: LanguageModelEndpoints | None = Field(
        default=None,
        description="OpenAI-compatible endpoints for the rewriter and/or the critic, over the preset's (per role). "
        "When every role that would use the preset's LLM has one, no LLM deployment is started.",
    )
    llm_backend: Literal["engine", "ray_serve_llm"] = Field(
        default="engine",
        description="How the preset's LLM is served: 'engine', the project's LLMDeployment over the engine class "
        "in `engines.llm`; 'ray_serve_llm', Ray Serve LLM's LLMServer (vLLM with Ray's health check, placement group "
        "for tensor parallelism and LLM metrics) built from the same LLMEngineConfig (serving/serve_llm.py).",
    )
    tiny_dir: str | None = Field(default=None, max_length=4096,
                                 description="Where tiny models live (built there if missing).")
    store_root: str = Field(default="runs/serve", min_length=1, max_length=4096,
                            description="fsspec URL; each campaign gets <root>/<id>/.")
    engines: EngineClasses = Field(default_factory=EngineClasses, description="Engine classes (import paths).")
    planner_workers: bool = Field(
        default=False,
        description="Search intents on the `planner` deployment (workers Ray places on any node, autoscaled on "
        "their own; pipelines/server/planner.py) instead of inside the ingress. Needs a store every node reaches.",
    )
    renderers: dict[str, DiffusionOverrides] = Field(  # type: ignore[valid-type]
        default_factory=dict,
        description="More renderer deployments, by name (each a Serve deployment of that name, with its own replicas "
        "and options): DiffusionEngineConfig fields over the preset's diffusion (another checkpoint, dtype, ...). A "
        "campaign picks one with `renderer`; a model A/B (`ab`) renders on two.",
    )

    @model_validator(mode="after")
    def _renderer_names(self) -> AppConfig:
        for name in self.renderers:
            if name in DEPLOYMENTS or not is_deployment_name(name):
                raise ValueError(f"renderer name {name[:60]!r} must be lower case letters, digits and '_' (at most 63) "
                                 f"and not one of the app's own deployments {', '.join(DEPLOYMENTS)}")
        return self

    def resolve(self, renderer: str = DEFAULT_RENDERER) -> ModelPreset:
        """The preset with this config's overrides; for a renderer of ``renderers``, its diffusion fields over
        them (raises KeyError for a name the app does not serve)."""
        diffusion = self.diffusion
        if renderer != DEFAULT_RENDERER:
            extra = self.renderers[renderer]
            base = diffusion.model_dump(exclude_none=True) if diffusion is not None else {}
            diffusion = type(extra).model_validate({**base, **extra.model_dump(exclude_none=True)})
        return resolve_preset(self.preset, self.tiny_dir, diffusion=diffusion, llm=self.llm,
                              defaults=self.defaults, endpoints=self.endpoints)

    def renderer_names(self) -> list[str]:
        """Every renderer deployment the app serves: 'diffusion' first, then ``renderers``."""
        return [DEFAULT_RENDERER, *self.renderers]


def is_deployment_name(name: str) -> bool:
    return re.fullmatch(r"[a-z][a-z0-9_]{0,62}", name) is not None


class IngressConfig(BaseModel):
    """The ingress's ``user_config``: admission and size limits, updatable in place (no redeploy). The ingress
    answers a request over one of them with 413, 422 or 429 (:func:`pipelines.server.ingress.check_limits`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_running_campaigns: int = Field(default=4, ge=1, le=1000, description="Beyond this, submissions get 429.")
    retry_after_s: int = Field(default=30, ge=1, le=3600, description="The Retry-After a 429 carries.")
    max_body_bytes: int = Field(default=16 * 2**20, ge=1024, le=2**30,
                                description="Largest submission body; larger ones get 413 before being parsed.")
    max_intents: int = Field(default=10_000, ge=1, le=MAX_INTENTS, description="Most intents in one campaign.")
    max_image_side: int = Field(default=1024, ge=8, le=MAX_IMAGE_SIDE,
                                description="Largest width or height a campaign sets.")
    max_steps: int = Field(default=50, ge=1, le=200, description="Most denoising steps a campaign sets.")
    max_images_per_campaign: int = Field(
        default=1_000_000, ge=1, le=10**9,
        description="Most images a campaign may render: intents x max_images x arms (2 with the baseline).",
    )


def load_app_config(config: Path | None = None, *, preset: str | None = None, diffusion_model: str | None = None,
                    llm_model: str | None = None, store_root: Path | None = None,
                    endpoints: dict | None = None) -> tuple[AppConfig, dict[str, dict]]:
    """(AppConfig, the Serve options per deployment name) from a config file and overrides over it: what
    ``promptbeam run``, ``serve`` and ``search`` start from.

    ``config`` is a Serve config (its first application's ``args`` and ``deployments``, e.g.
    ``deploy/serve_config.yaml``) or a bare AppConfig mapping; ``preset``, the two models, ``store_root`` and the
    per-role ``endpoints`` replace what it says. Raises ValueError naming the problem (a missing file, an invalid
    field, an unknown preset) before anything starts."""
    import yaml

    args: dict[str, Any] = {}
    deployments: dict[str, dict] = {}
    if config is not None:
        if not config.is_file():
            raise ValueError(f"config file {str(config)!r} does not exist")
        raw = yaml.safe_load(config.read_text()) or {}
        if "applications" in raw:  # a Serve config
            application = raw["applications"][0]
            args = dict(application.get("args") or {})
            deployments = {d["name"]: {k: v for k, v in d.items() if k != "name"}
                           for d in application.get("deployments") or []}
        else:
            args = dict(raw)
    if preset:
        args["preset"] = preset
    for section, model in (("diffusion", diffusion_model), ("llm", llm_model)):
        if model:
            args[section] = {**(args.get(section) or {}), "model": model}
    if store_root is not None:
        args["store_root"] = str(store_root)
    if endpoints:
        args["endpoints"] = {**(args.get("endpoints") or {}), **endpoints}
    app_config = AppConfig.model_validate(args)  # a ValidationError is a ValueError
    app_config.resolve()  # unknown presets and invalid model fields fail here, before anything starts
    return app_config, deployments
