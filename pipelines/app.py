"""The Serve application: a FastAPI campaign ingress composed with serving's diffusion and LLM deployments.

``deploy/serve_config.yaml`` imports :func:`build_app`; ``promptbeam run`` and ``promptbeam serve`` call
:func:`compose_app` (the same app, with Serve options given in Python). Its
``args`` (:class:`AppConfig`) hold only what changes the code path: the models (a preset and field overrides), the
engine classes and the store. Replicas, autoscaling, resources, batching and the ingress's admission limit are Serve
deployment options in the config's ``deployments:`` section; Serve applies those in place (batching and the limit
reach running replicas as ``user_config``), without redeploying the app or reloading a model.
"""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ray import serve

from pipelines.campaign import CampaignConflict, CampaignRunner, intent_concurrency
from pipelines.records import (
    NAME_PATTERN,
    CampaignAccepted,
    CampaignSpec,
    CampaignState,
    CampaignStatus,
    CampaignTally,
    Health,
    ModelsRecord,
)
from pipelines.store import CampaignStore, StoreFormatError
from serving.clients import ServeLanguageModel, ServeRenderer, open_role_models
from serving.deployments import build_diffusion_deployment, build_llm_deployment, llm_options, merge_options
from serving.openai_client import LanguageModelEndpoints
from serving.presets import (
    DiffusionOverrides,
    LLMOverrides,
    ModelPreset,
    RenderDefaultsOverrides,
    default_tiny_dir,
    ensure_models,
    import_object,
    resolve_preset,
)

logger = logging.getLogger(__name__)


class EngineClasses(BaseModel):
    """Engine classes the deployments instantiate, as import paths (tests name fake engines here)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    diffusion: str = Field(default="serving.engines:DiffusionEngine", description="Takes a DiffusionEngineConfig.")
    llm: str = Field(default="serving.engines:LLMEngine", description="Takes an LLMEngineConfig.")


class AppConfig(BaseModel):
    """Arguments of :func:`build_app` (the ``args:`` block of ``deploy/serve_config*.yaml``)."""

    model_config = ConfigDict(extra="forbid")

    preset: str = Field(default="tiny", description="Model preset: a name in serving/presets/ or a path to a .yaml.")
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
    tiny_dir: str | None = Field(default=None, description="Where tiny models live (built there if missing).")
    store_root: str = Field(default="runs/serve", description="fsspec URL; each campaign gets <root>/<id>/.")
    engines: EngineClasses = Field(default_factory=EngineClasses)

    def resolve(self) -> ModelPreset:
        return resolve_preset(self.preset, self.tiny_dir, diffusion=self.diffusion, llm=self.llm,
                              defaults=self.defaults, endpoints=self.endpoints)


class IngressConfig(BaseModel):
    """The ingress's ``user_config`` (in-place updatable)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_running_campaigns: int = Field(default=4, ge=1, le=1000, description="Beyond this, submissions get 429.")


INGRESS_OPTIONS: dict[str, Any] = {
    "num_replicas": 1,  # campaigns run as tasks inside the ingress: one replica owns them
    "ray_actor_options": {"num_cpus": 0},
    "max_ongoing_requests": 256,
    "user_config": IngressConfig().model_dump(),
    "graceful_shutdown_timeout_s": 30,
}

api = FastAPI(
    title="promptbeam",
    description="Submit text-to-image prompt-refinement campaigns; get every image with its lineage.",
    version="0.2.0",
)


def _log_failure(task: asyncio.Task) -> None:
    """A campaign task that died (not cancelled) leaves its reason in the replica log; its status says 'failed'."""
    if not task.cancelled() and task.exception() is not None:
        logger.error("campaign task failed: %r", task.exception())


def _errors(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors(include_url=False))


@serve.ingress(api)
class CampaignIngress:
    def __init__(self, diffusion, llm, config: AppConfig):
        self.config = config
        self.preset = config.resolve()
        self.models = ModelsRecord.of(self.preset)
        self.renderer = ServeRenderer(diffusion)
        if llm is None:
            self.llm = None
        elif config.llm_backend == "ray_serve_llm":
            from serving.serve_llm import ServeLLMLanguageModel

            self.llm = ServeLLMLanguageModel(llm, self.preset.llm.model)
        else:
            self.llm = ServeLanguageModel(llm)
        # Roles with an OpenAI-compatible endpoint talk to it directly (one pooled client per endpoint).
        self.rewriter_llm, self.critic_llm = open_role_models(self.preset.endpoints, self.llm)
        self.limits = IngressConfig()
        self.runs: dict[str, tuple[CampaignRunner, asyncio.Task | None]] = {}

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        self.limits = IngressConfig.model_validate(user_config or {})

    def _store(self, campaign_id: str) -> CampaignStore:
        if not re.match(NAME_PATTERN, campaign_id):
            raise HTTPException(404, f"no campaign {campaign_id!r}")
        return CampaignStore(f"{self.config.store_root.rstrip('/')}/{campaign_id}")

    def _running(self) -> list[str]:
        return [cid for cid, (_, task) in self.runs.items() if task is None or not task.done()]

    @api.post("/v1/campaigns", status_code=202, response_model=CampaignAccepted)
    async def submit(self, spec: CampaignSpec) -> CampaignAccepted:
        """Start (or resume) a campaign. Resubmitting the same campaign resumes it: finished intents are skipped."""
        if spec.preset is not None and spec.preset != self.preset.name:
            raise HTTPException(422, f"this endpoint serves preset {self.preset.name!r}, not {spec.preset!r}")
        try:
            search = spec.search_config(self.preset.defaults)
        except ValidationError as exc:
            raise HTTPException(422, f"invalid search config: {_errors(exc)}") from exc
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from exc
        concurrency = spec.concurrency or intent_concurrency(search, await self.renderer.capacity())
        cid = spec.campaign_id()
        runner = CampaignRunner(spec, search, self.renderer, self.rewriter_llm, self._store(cid), models=self.models,
                                concurrency=concurrency, critic_llm=self.critic_llm)
        # Admission: the checks and the registration happen with no await in between.
        running = self._running()
        if cid in running:
            raise HTTPException(409, f"campaign {cid!r} is already running")
        if len(running) >= self.limits.max_running_campaigns:
            raise HTTPException(429, f"{len(running)} campaigns are running; the limit is "
                                     f"{self.limits.max_running_campaigns}. Retry later.")
        previous = self.runs.get(cid)
        self.runs[cid] = (runner, None)

        def undo() -> None:
            if previous is None:
                del self.runs[cid]
            else:
                self.runs[cid] = previous

        try:
            resumed = await asyncio.to_thread(runner.prepare_store)
        except (CampaignConflict, StoreFormatError) as exc:
            undo()
            raise HTTPException(409, str(exc)) from exc
        except BaseException:
            undo()
            raise
        task = asyncio.create_task(runner.run())
        task.add_done_callback(_log_failure)
        self.runs[cid] = (runner, task)
        return CampaignAccepted(id=cid, state=runner.state, intents=len(spec.intents), resumed_intents=resumed,
                                concurrency=concurrency, status_url=f"/v1/campaigns/{cid}",
                                results_url=f"/v1/campaigns/{cid}/results")

    @api.get("/v1/campaigns/{campaign_id}", response_model=CampaignStatus)
    async def status(self, campaign_id: str) -> CampaignStatus:
        """Progress and statistics (constant size): intents done/failed/rejected/total, images and costs per arm,
        mean improvement over the baseline with its 95% interval. Per-intent scores: GET .../results."""
        if campaign_id in self.runs:
            return self.runs[campaign_id][0].status
        store = self._store(campaign_id)
        compiled = await asyncio.to_thread(store.read_status)
        if compiled is not None:
            return compiled
        manifest = await asyncio.to_thread(store.read_manifest)
        if manifest is None:
            raise HTTPException(404, f"no campaign {campaign_id!r}")

        def fold() -> CampaignStatus:  # a run that ended without compiling (its process died): fold the parts
            tally = CampaignTally.of((p.outcome for p in store.iter_parts(manifest.intent_ids)), manifest.intents)
            finished = tally.summary().intents_finished == manifest.intents
            return tally.status(campaign_id, CampaignState.done if finished else CampaignState.cancelled,
                                manifest.created_at)

        return await asyncio.to_thread(fold)

    @api.get("/v1/campaigns/{campaign_id}/results")
    async def results(
        self,
        campaign_id: str,
        offset: int = Query(0, ge=0, description="Skip this many finished intents (campaign order)."),
        limit: int | None = Query(None, ge=1, le=100_000, description="At most this many lines; all when unset."),
    ) -> StreamingResponse:
        """One IntentOutcome per line, in campaign order (partial while the campaign runs). With ``limit``, a
        ``Link: <...>; rel="next"`` header points at the next page while more may follow."""
        store = self._store(campaign_id)
        manifest = await asyncio.to_thread(store.read_manifest)
        if manifest is None:
            raise HTTPException(404, f"no campaign {campaign_id!r}")

        def lines():
            for outcome in store.iter_outcomes(manifest.intent_ids, offset, limit):
                yield outcome.model_dump_json() + "\n"

        headers = {}
        if limit is not None and offset + limit < manifest.intents:
            headers["Link"] = f'</v1/campaigns/{campaign_id}/results?offset={offset + limit}&limit={limit}>; rel="next"'
        return StreamingResponse(lines(), media_type="application/x-ndjson", headers=headers)

    @api.get("/v1/campaigns/{campaign_id}/images/{name}")
    async def image(self, campaign_id: str, name: str) -> Response:
        store = self._store(campaign_id)
        try:
            png = await asyncio.to_thread(store.read_image, name)
        except FileNotFoundError as exc:
            raise HTTPException(404, f"no image {name!r} in campaign {campaign_id!r}") from exc
        return Response(png, media_type="image/png")

    @api.delete("/v1/campaigns/{campaign_id}", response_model=CampaignStatus)
    async def cancel(self, campaign_id: str) -> CampaignStatus:
        """Cancel a running campaign. Finished intents stay; resubmitting resumes it."""
        if campaign_id not in self.runs:
            raise HTTPException(404, f"no running campaign {campaign_id!r}")
        runner, task = self.runs[campaign_id]
        if task is None:
            raise HTTPException(409, f"campaign {campaign_id!r} is still starting; retry in a moment")
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        return runner.status

    @api.get("/healthz", response_model=Health)
    async def healthz(self) -> Health:
        """Liveness, the models served and the app's code version (unchanged by in-place config updates)."""
        return Health(preset=self.preset.name, models=self.models, code_version=serve.get_replica_context().code_version)


def build_app(args: dict[str, Any] | AppConfig | None = None):
    """The Serve application from a Serve config's ``args`` (an :class:`AppConfig` or its dict). Serve requires a
    builder with exactly this one parameter; the config's ``deployments:`` section sets the deployment options."""
    return compose_app(args if isinstance(args, AppConfig) else AppConfig.model_validate(args or {}))


def compose_app(config: AppConfig, deployments: dict[str, dict[str, Any]] | None = None):
    """The Serve application for Python callers (the CLI, tests, benchmarks). ``deployments`` takes per-deployment
    Serve options keyed ``diffusion``/``llm``/``ingress``, in the shape of a Serve config's ``deployments:`` entries,
    merged over this code's defaults (the same options a Serve config would set)."""
    deployments = deployments or {}
    unknown = set(deployments) - {"diffusion", "llm", "ingress"}
    if unknown:
        raise ValueError(f"unknown deployments {sorted(unknown)}; the app has 'diffusion', 'llm' and 'ingress'")
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
    llm = None
    if preset.needs_llm:
        if config.llm_backend == "ray_serve_llm":
            from serving.serve_llm import build_serve_llm_deployment

            llm = build_serve_llm_deployment(preset.llm, on_gpu=preset.on_gpu,
                                             options=merge_options(llm_options(on_gpu=preset.on_gpu),
                                                                   deployments.get("llm")))
        else:
            llm = build_llm_deployment(preset.llm, import_object(config.engines.llm), on_gpu=preset.on_gpu,
                                       options=deployments.get("llm"))
    ingress = serve.deployment(CampaignIngress, name="ingress", **merge_options(INGRESS_OPTIONS,
                                                                               deployments.get("ingress")))
    return ingress.bind(diffusion, llm, config)
