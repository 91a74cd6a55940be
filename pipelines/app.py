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
from pathlib import Path
from typing import Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ray import serve

from agents.config import SearchConfig
from pipelines.auth import AuthSettings, BearerAuth, check_bind
from pipelines.campaign import CampaignConflict, CampaignRunner, intent_concurrency
from pipelines.http import ApiError, install_error_handlers, parse_spec, read_body, validation_error
from pipelines.records import (
    MAX_INTENTS,
    CampaignAccepted,
    CampaignSpec,
    CampaignState,
    CampaignStatus,
    CampaignTally,
    Health,
    ModelsRecord,
)
from pipelines.store import CampaignStore, RunningRegistry, StoreFormatError, UnsafeName, campaign_store
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
    retry_after_s: int = Field(default=30, ge=1, le=3600, description="The Retry-After a 429 carries.")
    max_body_bytes: int = Field(default=16 * 2**20, ge=1024, le=2**30,
                                description="Largest submission body; larger ones get 413 before being parsed.")
    max_intents: int = Field(default=10_000, ge=1, le=MAX_INTENTS, description="Most intents in one campaign.")
    max_image_side: int = Field(default=1024, ge=8, le=4096, description="Largest width or height a campaign sets.")
    max_steps: int = Field(default=50, ge=1, le=200, description="Most denoising steps a campaign sets.")
    max_images_per_campaign: int = Field(
        default=1_000_000, ge=1, le=10**9,
        description="Most images a campaign may render: intents x max_images x arms (2 with the baseline).",
    )

    def check(self, search: SearchConfig, intents: int, baseline_share: float) -> None:
        """Raise :class:`ApiError` 422 naming the first search setting over the operator's bounds."""
        images = intents * search.max_images * (1 + (baseline_share if search.run_baseline else 0))
        problems = [
            (f"search.{side}", f"{getattr(search, side)} pixels is over this endpoint's max_image_side "
                               f"{self.max_image_side}")
            for side in ("width", "height") if getattr(search, side) > self.max_image_side
        ]
        if search.steps > self.max_steps:
            problems.append(("search.steps", f"{search.steps} steps is over this endpoint's max_steps {self.max_steps}"))
        if images > self.max_images_per_campaign:
            problems.append(("search.max_images", f"{intents} intents x {search.max_images} images x arms = "
                                                  f"{images:.0f} images, over max_images_per_campaign "
                                                  f"{self.max_images_per_campaign}"))
        if problems:
            raise validation_error([{"loc": (f,), "msg": r} for f, r in problems])


INGRESS_OPTIONS: dict[str, Any] = {
    "num_replicas": 1,  # campaigns run as tasks inside the ingress: one replica owns them
    "ray_actor_options": {"num_cpus": 0},
    "max_ongoing_requests": 256,
    "user_config": IngressConfig().model_dump(),
    "graceful_shutdown_timeout_s": 30,
}

api = FastAPI(
    title="promptbeam",
    description="Submit text-to-image prompt-refinement campaigns; get every image with its lineage. With a token "
    "configured, /v1 routes need `Authorization: Bearer <token>`.",
    version="0.2.0",
)
install_error_handlers(api)
API_AUTH = BearerAuth()
"""The /v1 routes' dependency; the ingress sets its token from :class:`AuthSettings` when it starts."""
V1 = [Depends(API_AUTH)]


def _openapi() -> dict[str, Any]:
    """The submission body is read by hand (size limit, parsing off the event loop); document it as CampaignSpec."""
    if api.openapi_schema is None:
        schema = get_openapi(title=api.title, version=api.version, description=api.description, routes=api.routes)
        spec = CampaignSpec.model_json_schema(ref_template="#/components/schemas/{model}")
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(spec.pop("$defs", {}))
        components["CampaignSpec"] = spec
        api.openapi_schema = schema
    return api.openapi_schema


api.openapi = _openapi  # type: ignore[method-assign]
SPEC_BODY = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": {"$ref": "#/components/schemas/CampaignSpec"}}}}}


def _log_failure(task: asyncio.Task) -> None:
    """A campaign task that died (not cancelled) leaves its reason in the replica log; its status says 'failed'."""
    if not task.cancelled() and task.exception() is not None:
        logger.error("campaign task failed: %r", task.exception())


def _serve_http_host() -> str | None:
    """The address Serve's HTTP proxy binds (from the controller), or None when it cannot be asked."""
    try:
        from ray.serve.context import _get_global_client

        return _get_global_client().http_config.host
    except Exception:  # noqa: BLE001 - outside Serve, or a Ray without this API: the caller assumes the worst
        return None


@serve.ingress(api)
class CampaignIngress:
    def __init__(self, diffusion, llm, config: AppConfig):
        auth = AuthSettings()
        token = auth.token()
        check_bind(_serve_http_host() or "0.0.0.0", token, auth)
        API_AUTH.token = token
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
        self.registry = RunningRegistry(config.store_root)
        self.cancelled_by_user: set[str] = set()
        # Campaigns a previous ingress was running when it died: resumed as soon as this one serves (Serve runs
        # the constructor on the replica's event loop).
        try:
            self.resuming: asyncio.Task | None = asyncio.get_running_loop().create_task(self._resume_registered())
        except RuntimeError:  # constructed outside an event loop (not under Serve): nothing to resume here
            self.resuming = None

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        self.limits = IngressConfig.model_validate(user_config or {})

    def _store(self, campaign_id: str) -> CampaignStore:
        try:
            return campaign_store(self.config.store_root, campaign_id)
        except UnsafeName as exc:
            raise HTTPException(404, f"no campaign {campaign_id[:120]!r}: {exc}") from exc

    def _running(self) -> list[str]:
        return [cid for cid, (_, task) in self.runs.items() if task is None or not task.done()]

    @api.post("/v1/campaigns", status_code=202, response_model=CampaignAccepted, dependencies=V1,
              openapi_extra=SPEC_BODY)
    async def submit(self, request: Request) -> CampaignAccepted:
        """Start (or resume) a campaign (a CampaignSpec as JSON). Resubmitting the same campaign resumes it: finished
        intents are skipped. 413 over the body limit, 422 naming the field over a limit, 429 (with Retry-After) while
        the running-campaign limit is reached."""
        limits = self.limits
        body = await read_body(request, limits.max_body_bytes)
        spec = await asyncio.to_thread(parse_spec, body, request.headers.get("content-type"), limits.max_intents)
        if spec.preset is not None and spec.preset != self.preset.name:
            raise HTTPException(422, f"this endpoint serves preset {self.preset.name!r}, not {spec.preset[:100]!r}")
        try:
            search = await asyncio.to_thread(spec.search_config, self.preset.defaults)
        except ValidationError as exc:
            errors = [{**e, "loc": ("search", *e["loc"])} for e in exc.errors(include_url=False, include_input=False)]
            raise validation_error(errors) from exc
        except ValueError as exc:
            raise validation_error([{"loc": ("intents",), "msg": str(exc)}]) from exc
        limits.check(search, len(spec.intents or []), spec.baseline_fraction)
        return await self._admit(spec, search)

    async def _admit(self, spec: CampaignSpec, search: SearchConfig) -> CampaignAccepted:
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
                                     f"{self.limits.max_running_campaigns}. Retry later.",
                                headers={"Retry-After": str(self.limits.retry_after_s)})
        previous = self.runs.get(cid)
        self.runs[cid] = (runner, None)

        def undo() -> None:
            if previous is None:
                del self.runs[cid]
            else:
                self.runs[cid] = previous

        try:
            resumed = await asyncio.to_thread(runner.prepare_store)
            await asyncio.to_thread(self.registry.add, cid, spec.model_dump_json().encode())
        except (CampaignConflict, StoreFormatError) as exc:
            undo()
            raise HTTPException(409, str(exc)) from exc
        except BaseException:
            undo()
            raise
        task = asyncio.create_task(self._run(runner))
        task.add_done_callback(_log_failure)
        self.runs[cid] = (runner, task)
        return CampaignAccepted(id=cid, state=runner.state, intents=len(spec.intents), resumed_intents=resumed,
                                concurrency=concurrency, status_url=f"/v1/campaigns/{cid}",
                                results_url=f"/v1/campaigns/{cid}/results")

    async def _run(self, runner: CampaignRunner) -> None:
        """Run a campaign; it leaves the durable registry when it ends or a user cancels it, and stays there when
        the ingress stops (a replacement ingress resumes it)."""
        try:
            await runner.run()
        except asyncio.CancelledError:
            if runner.id in self.cancelled_by_user:
                await asyncio.shield(asyncio.to_thread(self.registry.remove, runner.id))
            raise
        except BaseException:
            await asyncio.to_thread(self.registry.remove, runner.id)
            raise
        await asyncio.to_thread(self.registry.remove, runner.id)

    async def _resume_registered(self) -> None:
        entries = await asyncio.to_thread(self.registry.entries)
        for cid, data in sorted(entries.items()):
            try:
                spec = CampaignSpec.model_validate_json(data)
                accepted = await self._admit(spec, spec.search_config(self.preset.defaults))
                logger.info("resumed campaign %s (%d intents finished before)", cid, accepted.resumed_intents)
            except Exception as exc:  # noqa: BLE001 - one unresumable campaign must not stop the others
                logger.error("could not resume campaign %s: %s", cid, exc)
                if not isinstance(exc, HTTPException) or exc.status_code != 429:
                    await asyncio.to_thread(self.registry.remove, cid)

    @api.get("/v1/campaigns/{campaign_id}", response_model=CampaignStatus, dependencies=V1)
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
            # registered but not run here yet: this ingress is about to resume it
            unfinished = CampaignState.running if self.registry.contains(campaign_id) else CampaignState.cancelled
            return tally.status(campaign_id, CampaignState.done if finished else unfinished, manifest.created_at)

        return await asyncio.to_thread(fold)

    @api.get("/v1/campaigns/{campaign_id}/results", dependencies=V1)
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

    @api.get("/v1/campaigns/{campaign_id}/images/{name}", dependencies=V1)
    async def image(self, campaign_id: str, name: str) -> Response:
        store = self._store(campaign_id)
        try:
            png = await asyncio.to_thread(store.read_image, name)
        except FileNotFoundError as exc:
            raise HTTPException(404, f"no image {name[:120]!r} in campaign {campaign_id!r}") from exc
        return Response(png, media_type="image/png")

    @api.delete("/v1/campaigns/{campaign_id}", response_model=CampaignStatus, dependencies=V1)
    async def cancel(self, campaign_id: str) -> CampaignStatus:
        """Cancel a running campaign. Finished intents stay; resubmitting resumes it."""
        if campaign_id not in self.runs:
            raise HTTPException(404, f"no running campaign {campaign_id[:120]!r}")
        runner, task = self.runs[campaign_id]
        if task is None:
            raise HTTPException(409, f"campaign {campaign_id!r} is still starting; retry in a moment")
        if not task.done():
            self.cancelled_by_user.add(campaign_id)
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
