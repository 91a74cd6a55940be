"""Model presets as data: which diffusion model and which LLM/VLM to serve, how, and the image defaults they imply.

Each ``serving/presets/<name>.yaml`` is one :class:`ModelPreset` (``tiny``, ``world``, ``gpu``, ``sdxl``,
``flux-schnell``); a path to a YAML file of the same shape works wherever a preset name does. The app config and the
CLI overlay single fields on top (:func:`resolve_preset`), so switching models is an edit of YAML, never of Python::

    preset: gpu
    diffusion: {model: black-forest-labs/FLUX.1-schnell, dtype: bfloat16, max_batch_size: 4}
    defaults: {width: 1024, height: 1024, steps: 4}

Nothing here touches the disk at import; the tiny-model directory and the fetched-model cache (``{models}``,
:func:`serving.model_fetch.default_cache_dir`) are looked up when a preset is loaded.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

from serving.config import DiffusionEngineConfig, LLMEngineConfig
from serving.openai_client import LanguageModelEndpoints

_DIR = Path(__file__).parent
REPO_ROOT = _DIR.parent.parent
"""The repository root (``{repo}`` in a preset): models shipped in the repo are found from here wherever it runs."""
DEFAULT_FETCHED_MODEL = "qwen2.5-coder-0.5b-instruct"
"""The real instruct LLM the ``world-llm`` preset serves (chosen by ``benchmarks/bench_llm_candidates.py``)."""
M = TypeVar("M", bound=BaseModel)

AGENT_KIND = r"^(llm|[A-Za-z_][\w.]*:[A-Za-z_]\w*)$"


class PresetError(ValueError):
    """An unknown preset, or a preset file that does not validate."""


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RenderDefaults(_Config):
    """Image settings that belong to the diffusion model (a campaign's search config may still set them). They change
    the images, so a campaign's resume fingerprint covers them."""

    width: int = Field(ge=8, le=4096, multiple_of=8, description="Image width in pixels.")
    height: int = Field(ge=8, le=4096, multiple_of=8, description="Image height in pixels.")
    steps: int = Field(ge=1, le=200, description="Denoising steps.")
    guidance_scale: float = Field(ge=0.0, le=30.0, description="CFG scale; <= 1 disables CFG (and negative prompts).")


class ModelPreset(_Config):
    """A named model setup: the renderer, the rewriter/critic model, their image defaults and agent kinds."""

    name: str = Field(description="The preset's name (its file's stem).")
    description: str = Field(default="", max_length=300)
    diffusion: DiffusionEngineConfig
    llm: LLMEngineConfig | None = Field(
        default=None, description="The VLM serving rewriter and critic; None when neither agent needs a language model."
    )
    defaults: RenderDefaults
    rewriter: str = Field(
        default="llm", pattern=AGENT_KIND,
        description="'llm': agents.rewriter.Rewriter on the preset's LLM; else 'module:factory', called as "
        "factory(llm_or_None, RewriterConfig) and returning an object with Rewriter's interface.",
    )
    critic: str = Field(
        default="llm", pattern=AGENT_KIND,
        description="'llm': agents.critic.Critic on the preset's LLM; else 'module:factory', called as "
        "factory(llm_or_None, CriticConfig) and returning an object with Critic's interface.",
    )
    endpoints: LanguageModelEndpoints = Field(
        default_factory=LanguageModelEndpoints,
        description="OpenAI-compatible endpoints for the rewriter and/or the critic (a user's vLLM server, Ray Serve "
        "LLM's OpenAI app, a hosted VLM). A role with an endpoint is not served by `llm`; when both roles have one, "
        "no LLM deployment is started.",
    )
    build: Literal["tiny"] | None = Field(
        default=None, description="'tiny': the models are built offline into the tiny-model directory on first use."
    )
    batch_seconds: float = Field(
        default=30.0, gt=0, le=3600,
        description="Wall time of the slowest full pipeline batch on the target device, with margin. Sizes the "
        "diffusion replica's graceful_shutdown_timeout_s so a stopping replica finishes the batches it holds.",
    )

    @model_validator(mode="after")
    def _llm_when_needed(self) -> ModelPreset:
        if self.llm is None and self.needs_llm:
            raise ValueError(
                f"preset {self.name!r} has no `llm` but its rewriter ({self.rewriter!r}) or critic ({self.critic!r}) "
                "is 'llm'"
            )
        return self

    @property
    def needs_llm(self) -> bool:
        """Whether a role runs on the preset's own LLM (kind 'llm' and no endpoint): then the LLM is served."""
        return (self.rewriter == "llm" and self.endpoints.rewriter is None) or (
            self.critic == "llm" and self.endpoints.critic is None
        )

    @property
    def on_gpu(self) -> bool:
        """Whether the preset's models run on a GPU (deployments then ask Ray for one GPU per replica by default)."""
        return self.diffusion.device == "cuda"


def partial_model(model: type[M], name: str | None = None) -> type[BaseModel]:
    """A model with ``model``'s fields, all optional (default None), with the same bounds and descriptions: the typed
    shape of "override some fields of ``model``". Fields added to ``model`` later appear here by themselves."""
    fields: dict[str, Any] = {}
    for field_name, info in model.model_fields.items():
        annotation = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
        fields[field_name] = (annotation | None, Field(default=None, description=info.description))
    return create_model(
        name or f"{model.__name__}Overrides",
        __config__=ConfigDict(extra="forbid", frozen=True),
        __doc__=f"Fields of {model.__name__} to override; unset fields keep the base value.",
        **fields,
    )


DiffusionOverrides = partial_model(DiffusionEngineConfig)
LLMOverrides = partial_model(LLMEngineConfig)
RenderDefaultsOverrides = partial_model(RenderDefaults)


def overlay(base: M, overrides: BaseModel | None) -> M:
    """``base`` with the fields set in ``overrides`` replaced, validated together (cross-field checks run)."""
    if overrides is None:
        return base
    return type(base).model_validate({**base.model_dump(), **overrides.model_dump(exclude_unset=True)})


def default_tiny_dir() -> Path:
    """Where tiny models live unless configured: ``$PROMPTBEAM_TINY_DIR``, else ``./.cache/tiny-models`` (looked up at
    call time, so a process that changes directory or sets the variable later gets what it expects)."""
    return Path(os.environ.get("PROMPTBEAM_TINY_DIR") or Path.cwd() / ".cache" / "tiny-models").resolve()


def available() -> list[str]:
    """Names of the presets shipped in ``serving/presets/``."""
    return sorted(p.stem for p in _DIR.glob("*.yaml"))


def load_preset(name: str, tiny_dir: str | os.PathLike | None = None,
                endpoints: LanguageModelEndpoints | None = None) -> ModelPreset:
    """The preset called ``name`` (or the YAML file at that path), with ``{tiny_dir}``, ``{repo}`` (the
    repository root, where models shipped in the repo live) and ``{models}`` (the cache ``promptbeam models fetch``
    installs into) filled in. Each role set in
    ``endpoints`` replaces the file's endpoint for that role (validated together: a preset without an ``llm`` is
    valid once every role has an endpoint)."""
    path = Path(name).expanduser() if name.endswith((".yaml", ".yml")) else _DIR / f"{name}.yaml"
    if not path.is_file():
        raise PresetError(f"unknown model preset {name!r}; choose one of {available()} or give a path to a .yaml file")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise PresetError(f"preset file {str(path)!r} must hold a mapping, not {type(raw).__name__}")
    root = str(Path(tiny_dir).resolve()) if tiny_dir else str(default_tiny_dir())
    for section in ("diffusion", "llm"):
        if isinstance(raw.get(section), dict) and isinstance(raw[section].get("model"), str):
            model = raw[section]["model"].replace("{tiny_dir}", root).replace("{repo}", str(REPO_ROOT))
            if "{models}" in model:
                from serving.model_fetch import default_cache_dir

                model = model.replace("{models}", str(default_cache_dir()))
            raw[section] = {**raw[section], "model": model}
    try:
        if endpoints is not None:
            own = LanguageModelEndpoints.model_validate(raw.get("endpoints") or {})
            raw["endpoints"] = LanguageModelEndpoints(rewriter=endpoints.rewriter or own.rewriter,
                                                      critic=endpoints.critic or own.critic)
        return ModelPreset.model_validate({"name": path.stem, **raw})
    except ValidationError as exc:
        raise PresetError(f"preset {str(path)!r} is invalid: {exc}") from exc


def resolve_preset(
    name: str,
    tiny_dir: str | os.PathLike | None = None,
    *,
    diffusion: BaseModel | None = None,
    llm: BaseModel | None = None,
    defaults: BaseModel | None = None,
    endpoints: LanguageModelEndpoints | None = None,
) -> ModelPreset:
    """A preset with field overrides laid over it (``DiffusionOverrides``, ``LLMOverrides``,
    ``RenderDefaultsOverrides``) and per-role ``endpoints`` over its own."""
    preset = load_preset(name, tiny_dir, endpoints)
    if llm is not None and preset.llm is None:
        raise PresetError(f"preset {preset.name!r} has no llm to override; give a full llm config in a preset file")
    return preset.model_copy(update={
        "diffusion": overlay(preset.diffusion, diffusion),
        "llm": overlay(preset.llm, llm) if preset.llm is not None else None,
        "defaults": overlay(preset.defaults, defaults),
    })


def ensure_models(preset: ModelPreset) -> None:
    """Build the preset's models where it says they are built locally (``build: tiny``), and fetch its LLM when it is
    a registry model (:mod:`serving.model_fetch`) missing from its cache directory; idempotent."""
    if preset.build == "tiny":
        from serving.tiny_models import make_tiny_models

        make_tiny_models(Path(preset.diffusion.model).parent)
    if preset.llm is not None and preset.needs_llm:
        from serving import model_fetch

        path = Path(preset.llm.model)
        model = model_fetch.REGISTRY.get(path.name)
        if model is not None and path.is_absolute() and not model_fetch.is_complete(model, path):
            model_fetch.fetch(model.name, path.parent)


def import_object(path: str) -> Any:
    """``'package.module:attr'`` -> the object (engine classes and agent factories are named this way in YAML)."""
    import importlib

    module, sep, attr = path.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"{path!r} is not an import path of the form 'package.module:attr'")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot import {path!r}: {exc}") from exc
