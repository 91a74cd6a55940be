"""The Serve application: a FastAPI campaign ingress composed with the diffusion and LLM deployments.

``deploy/serve_config.yaml`` imports :func:`build_app`; ``promptbeam run`` and ``promptbeam serve`` call it too.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ray import serve

from pipelines.adapters import ServeLanguageModel, ServeRenderer
from pipelines.campaign import CampaignRunner, CampaignSpec, CampaignState, CampaignStatus
from pipelines.store import CampaignStore
from serving.deployments import DiffusionServeOptions, ServeOptions, build_diffusion_deployment, build_llm_deployment
from serving.profiles import get_profile

logger = logging.getLogger(__name__)

_ID = re.compile(r"^[A-Za-z0-9_.\-]{1,100}$")


class AppConfig(BaseModel):
    """Arguments of :func:`build_app` (the ``args:`` block of ``deploy/serve_config.yaml``)."""

    model_config = ConfigDict(extra="forbid")

    profile: str = Field(default="tiny", description="Model profile: 'tiny' (offline CPU) or 'gpu'.")
    tiny_dir: str | None = Field(default=None, description="Where the tiny models live (built if missing).")
    store_root: str = Field(default="runs/serve", description="fsspec URL; each campaign gets <root>/<id>/.")
    max_running_campaigns: int = Field(default=4, ge=1, le=1000)
    diffusion: DiffusionServeOptions = Field(default_factory=DiffusionServeOptions)
    llm: ServeOptions = Field(default_factory=lambda: ServeOptions(max_ongoing_requests=64, target_ongoing_requests=16))


class CampaignAccepted(BaseModel):
    id: str
    state: CampaignState
    intents: int
    resumed_intents: int = Field(description="Intents already finished in an earlier run of this campaign.")
    status_url: str
    results_url: str


api = FastAPI(
    title="promptbeam",
    description="Submit text-to-image prompt-refinement campaigns; get every image with its lineage.",
    version="0.1.0",
)


def _log_failure(task: asyncio.Task) -> None:
    """A campaign task that died (not cancelled) leaves its reason in the replica log; its status says 'failed'."""
    if not task.cancelled() and task.exception() is not None:
        logger.error("campaign task failed: %r", task.exception())


@serve.ingress(api)
class CampaignIngress:
    def __init__(self, diffusion, llm, config: AppConfig):
        self.config = config
        self.profile = get_profile(config.profile, config.tiny_dir)
        self.renderer = ServeRenderer(diffusion)
        self.llm = ServeLanguageModel(llm)
        self.runs: dict[str, tuple[CampaignRunner, asyncio.Task]] = {}

    def _store(self, campaign_id: str) -> CampaignStore:
        if not _ID.match(campaign_id):
            raise HTTPException(404, f"no campaign {campaign_id!r}")
        return CampaignStore(f"{self.config.store_root.rstrip('/')}/{campaign_id}")

    def _search_defaults(self) -> dict[str, Any]:
        p = self.profile
        return {"width": p.width, "height": p.height, "steps": p.steps, "guidance_scale": p.guidance_scale}

    @api.post("/v1/campaigns", status_code=202, response_model=CampaignAccepted)
    async def submit(self, spec: CampaignSpec) -> CampaignAccepted:
        """Start (or resume) a campaign. Resubmitting the same campaign resumes it: finished intents are skipped."""
        if spec.profile is not None and spec.profile != self.profile.name:
            raise HTTPException(422, f"this endpoint serves profile {self.profile.name!r}, not {spec.profile!r}")
        try:
            search = spec.search_config(self._search_defaults())
        except ValidationError as exc:
            raise HTTPException(422, f"invalid search config: {exc.errors(include_url=False)}") from exc
        cid = spec.campaign_id()
        running = [r for r, t in self.runs.values() if not t.done()]
        if cid in self.runs and not self.runs[cid][1].done():
            raise HTTPException(409, f"campaign {cid!r} is already running")
        if len(running) >= self.config.max_running_campaigns:
            raise HTTPException(429, f"{len(running)} campaigns are running; the limit is "
                                     f"{self.config.max_running_campaigns}. Retry later.")
        store = await asyncio.to_thread(self._store, cid)
        runner = CampaignRunner(spec, search, self.renderer, self.llm, store,
                                models={"diffusion": self.profile.diffusion.model, "llm": self.profile.llm.model})
        try:
            await asyncio.to_thread(runner.prepare_store)
        except ValueError as exc:
            raise HTTPException(409, str(exc)) from exc
        resumed = len(await asyncio.to_thread(store.done_intents))
        task = asyncio.create_task(runner.run())
        task.add_done_callback(_log_failure)
        self.runs[cid] = (runner, task)
        return CampaignAccepted(id=cid, state=runner.status.state, intents=len(spec.intents), resumed_intents=resumed,
                                status_url=f"/v1/campaigns/{cid}", results_url=f"/v1/campaigns/{cid}/results")

    @api.get("/v1/campaigns/{campaign_id}", response_model=CampaignStatus)
    async def status(self, campaign_id: str) -> CampaignStatus:
        """Progress: intents done/total, images rendered, best scores so far."""
        if campaign_id in self.runs:
            return self.runs[campaign_id][0].status
        store = self._store(campaign_id)
        manifest = await asyncio.to_thread(store.read_manifest)
        if manifest is None:
            raise HTTPException(404, f"no campaign {campaign_id!r}")
        results = await asyncio.to_thread(lambda: list(store.iter_results(manifest["intent_ids"])))
        finished = len(results) == manifest["intents"]
        best = {r["intent_id"]: r["best_score"] for r in results if r.get("best_score") is not None}
        return CampaignStatus(
            id=campaign_id, state=CampaignState.done if finished else CampaignState.cancelled,
            intents_total=manifest["intents"], intents_done=sum(r["status"] == "done" for r in results),
            intents_rejected=sum(r["status"] == "rejected" for r in results),
            images_rendered=sum(r.get("images", 0) + r.get("baseline_images", 0) for r in results),
            best_scores=best, mean_best_score=sum(best.values()) / len(best) if best else None,
            started_at=manifest.get("created_at", 0.0),
        )

    @api.get("/v1/campaigns/{campaign_id}/results")
    async def results(self, campaign_id: str) -> StreamingResponse:
        """One JSON line per finished intent, in campaign order (partial while the campaign runs)."""
        store = self._store(campaign_id)
        manifest = await asyncio.to_thread(store.read_manifest)
        if manifest is None:
            raise HTTPException(404, f"no campaign {campaign_id!r}")

        def lines():
            for line in store.iter_results(manifest["intent_ids"]):
                yield json.dumps(line) + "\n"

        return StreamingResponse(lines(), media_type="application/x-ndjson")

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
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        return runner.status

    @api.get("/healthz")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok", "profile": self.profile.name}


def build_app(args: dict[str, Any] | AppConfig | None = None):
    """The Serve application. ``args`` is an :class:`AppConfig` or its dict (from ``serve_config.yaml``)."""
    config = args if isinstance(args, AppConfig) else AppConfig.model_validate(args or {})
    profile = get_profile(config.profile, config.tiny_dir)
    # Replicas may run in another working directory: hand them absolute local paths.
    if "://" not in config.store_root:
        config = config.model_copy(update={"store_root": str(Path(config.store_root).resolve())})
    if profile.name == "tiny":
        from serving.tiny_models import make_tiny_models

        tiny_dir = Path(profile.diffusion.model).parent.resolve()
        make_tiny_models(tiny_dir)
        config = config.model_copy(update={"tiny_dir": str(tiny_dir)})
        profile = get_profile(config.profile, config.tiny_dir)
    diffusion = build_diffusion_deployment(profile.diffusion, config.diffusion)
    llm = build_llm_deployment(profile.llm, config.llm)
    ingress = serve.deployment(
        CampaignIngress, name="ingress", num_replicas=1, ray_actor_options={"num_cpus": 0}, max_ongoing_requests=256
    )
    return ingress.bind(diffusion, llm, config)
