"""The server: the campaign API's FastAPI routes on a plain class (:class:`CampaignIngress`), which
:mod:`pipelines.server.builder` turns into the Serve deployment named ``ingress``.

It owns what answers with an HTTP error: the bearer-token check (FastAPI's ``HTTPBearer``, so OpenAPI shows the
security scheme), the operator limits (:func:`check_limits`, 413/422/429) and the campaign routes. Campaigns run as
tasks inside the ingress; the store and the running registry make them survive its restart.
"""

from __future__ import annotations

import asyncio
import logging
import posixpath
import time
from collections.abc import Callable
from typing import Any

import fsspec
from fastapi import Depends, FastAPI, HTTPException, Query, Request, Security
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import ValidationError
from ray import serve

from agents.config import SearchConfig
from agents.memory import Lesson
from agents.messages import SAFE_NAME, ActionRequest, HumanAction
from pipelines.ab import joined, read_comparison, read_variants, stored_state
from pipelines.campaign import (
    CampaignConflict,
    CampaignRunner,
    budget_problem,
    intent_concurrency,
    review_problem,
)
from pipelines.records import DEFAULT_RENDERER, MAX_NAME_CHARS, ABManifest, CampaignSpec, ModelsRecord
from pipelines.server.auth import BEARER_SCHEME, AuthSettings, BearerAuth, check_bind
from pipelines.server.configs import AppConfig, IngressConfig
from pipelines.server.http import install_error_handlers, parse_spec, read_body, validation_error
from pipelines.server.planner import ServePlanners
from pipelines.steering import ActionRefused, check_action, waiting_intent
from pipelines.store import (
    CampaignStore,
    RunningRegistry,
    StoreFormatError,
    UnsafeName,
    campaign_store,
    is_safe_name,
)
from pipelines.tally import CampaignTally
from pipelines.version import __version__
from pipelines.wire import (
    ABComparison,
    CampaignAccepted,
    CampaignListing,
    CampaignPage,
    CampaignState,
    CampaignStatus,
    Health,
)
from pipelines.wire import ReviewListing
from serving.clients import ServeLanguageModel, ServeRenderer, open_role_models

logger = logging.getLogger(__name__)

MAX_PAGE = 1000
"""Most campaigns one GET /v1/campaigns returns."""


def check_limits(limits: IngressConfig, search: SearchConfig, intents: int, baseline_share: float) -> None:
    """Raise :class:`pipelines.server.http.ApiError` 422 naming every search setting over the operator's bounds."""
    images = intents * search.max_images * (1 + (baseline_share if search.run_baseline else 0))
    problems = [
        (f"search.{side}", f"{getattr(search, side)} pixels is over this endpoint's max_image_side "
                           f"{limits.max_image_side}")
        for side in ("width", "height") if getattr(search, side) > limits.max_image_side
    ]
    if search.steps > limits.max_steps:
        problems.append(("search.steps", f"{search.steps} steps is over this endpoint's max_steps {limits.max_steps}"))
    if images > limits.max_images_per_campaign:
        problems.append(("search.max_images", f"{intents} intents x {search.max_images} images x arms = "
                                              f"{images:.0f} images, over max_images_per_campaign "
                                              f"{limits.max_images_per_campaign}"))
    if problems:
        raise validation_error([{"loc": (f,), "msg": r} for f, r in problems])


api = FastAPI(
    title="promptbeam",
    description="Submit text-to-image prompt-refinement campaigns; get every image with its lineage. With a token "
    "configured, /v1 routes need `Authorization: Bearer <token>`.",
    version=__version__,
)
install_error_handlers(api)


def require_token(request: Request,
                  credentials: HTTPAuthorizationCredentials | None = Security(BEARER_SCHEME)) -> str:
    """The /v1 routes' dependency: the token check of the ingress serving this app (set when it starts; until then
    every /v1 request is refused). Answers the token's name (who acted, for people's actions)."""
    auth: BearerAuth | None = getattr(request.app.state, "auth", None)
    if auth is None:
        raise HTTPException(503, "the ingress is still starting; retry in a moment", headers={"Retry-After": "5"})
    return auth.check(credentials)


V1 = [Depends(require_token)]


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


MAX_ACTION_BYTES = 64 * 1024
"""The largest action body (an action is a few kilobytes at most: ids, a prompt, a note)."""
ACTION_BODY = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": ActionRequest.model_json_schema()}}}}


def parse_action(body: bytes, content_type: str | None) -> ActionRequest:
    """A person's action from its body: 415 another content type, 400 not JSON, 422 naming the field at fault."""
    if content_type and content_type.split(";")[0].strip().lower() not in ("application/json", "text/json"):
        raise HTTPException(415, f"send the action as application/json, not {content_type[:60]!r}")
    try:
        return ActionRequest.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        if any(e["type"] == "json_invalid" for e in errors):
            raise HTTPException(400, "the body is not valid JSON (UTF-8)") from None
        raise validation_error(errors, exc.error_count()) from None


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
    """The campaign API. ``diffusion`` and ``llm`` are deployment handles (``llm`` None when every role has an
    OpenAI-compatible endpoint); ``llm_client`` wraps the LLM handle in the planner's ``LanguageModel`` port, as the
    builder chose for the LLM backend; ``auth`` is read from this replica's environment when not given."""

    def __init__(self, diffusion, llm, config: AppConfig,
                 llm_client: Callable[[Any], Any] = ServeLanguageModel, auth: AuthSettings | None = None,
                 planner=None, renderers: dict[str, Any] | None = None):
        auth = auth or AuthSettings()
        token = auth.token()
        named = auth.named_tokens()  # the single token among them, named 'api'
        check_bind(_serve_http_host() or "0.0.0.0", token or next(iter(named.values()), None), auth)
        api.state.auth = BearerAuth(token, named)
        self.config = config
        self.preset = config.resolve()
        self.models = ModelsRecord.of(self.preset)
        self.renderer = ServeRenderer(diffusion)
        # every renderer deployment a campaign may name (`renderer`, `ab`), with the models it records
        self.renderers = {DEFAULT_RENDERER: self.renderer,
                          **{name: ServeRenderer(h) for name, h in (renderers or {}).items()}}
        self.renderer_models = {name: ModelsRecord.of(config.resolve(name)).model_copy(update={"renderer": name})
                                for name in self.renderers}
        self.llm = None if llm is None else llm_client(llm)
        # Roles with an OpenAI-compatible endpoint talk to it directly (one pooled client per endpoint).
        self.rewriter_llm, self.critic_llm = open_role_models(self.preset.endpoints, self.llm)
        # With the planner deployment, intents are searched on its workers; else here (pipelines/server/planner.py)
        self.planners = None if planner is None else ServePlanners(planner)
        self.limits = IngressConfig()
        self.runs: dict[str, tuple[CampaignRunner, asyncio.Task | None]] = {}
        self.registry = RunningRegistry(config.store_root)
        self.cancelled_by_user: set[str] = set()
        self.actions_posted: dict[str, asyncio.Lock] = {}  # per campaign: one action's check-and-write at a time
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
        if spec.ab is not None:
            return await self._admit_ab(spec)
        check_limits(limits, search, len(spec.intents or []), spec.baseline_fraction)
        return await self._admit(spec, search)

    def _renderer_of(self, name: str, field: str = "renderer"):
        if name not in self.renderers:
            raise validation_error([{"loc": tuple(field.split(".")), "msg": f"this app serves no renderer {name!r}; "
                                     f"it has {', '.join(map(repr, self.renderers))} (AppConfig.renderers)"}])
        return self.renderers[name]

    async def _admit_ab(self, spec: CampaignSpec) -> CampaignAccepted:
        """A model A/B: its two variant campaigns admitted together (both or neither), after ``ab.json`` records
        which is which. Resubmitting resumes both."""
        children = spec.variants()
        searches = {}
        for name, child in children.items():
            self._renderer_of(child.renderer, f"ab.{name}.renderer")
            try:
                searches[name] = await asyncio.to_thread(child.search_config, self.preset.defaults)
            except ValidationError as exc:
                raise validation_error([{**e, "loc": ("ab", name, *e["loc"])}
                                        for e in exc.errors(include_url=False, include_input=False)]) from exc
            check_limits(self.limits, searches[name], len(spec.intents or []), spec.baseline_fraction)
        running = self._running()
        if busy := [c.campaign_id() for c in children.values() if c.campaign_id() in running]:
            raise HTTPException(409, f"campaign {busy[0]!r} is already running")
        if len(running) + len(children) > self.limits.max_running_campaigns:
            raise HTTPException(429, f"{len(running)} campaigns are running and a model A/B starts two; the limit is "
                                     f"{self.limits.max_running_campaigns}. Retry later.",
                                headers={"Retry-After": str(self.limits.retry_after_s)})
        parent = self._store(spec.campaign_id())
        first = next(iter(searches.values()))

        def record() -> None:
            stored = parent.read_ab()
            if stored is not None and stored.fingerprint != spec.spec_hash():
                raise CampaignConflict(f"campaign {spec.campaign_id()!r} already exists as another model A/B; choose "
                                       "another name")
            if stored is None and parent.read_manifest() is not None:
                raise CampaignConflict(f"campaign {spec.campaign_id()!r} already exists (not a model A/B); choose "
                                       "another name")
            parent.write_ab(ABManifest.of(spec, first.score_threshold,
                                          stored.created_at if stored else time.time()))

        try:
            await asyncio.to_thread(record)
        except CampaignConflict as exc:
            raise HTTPException(409, str(exc)) from exc
        accepted: dict[str, CampaignAccepted] = {}
        try:
            for name, child in children.items():
                accepted[name] = await self._admit(child, searches[name])
        except BaseException:  # the second could not start: stop the first too (a resubmission resumes both)
            for a in accepted.values():
                await self._stop(a.id)
            raise
        cid = spec.campaign_id()
        return CampaignAccepted(
            id=cid, state=CampaignState.running, intents=len(spec.intents),
            resumed_intents=min(a.resumed_intents for a in accepted.values()),
            concurrency=sum(a.concurrency for a in accepted.values()), status_url=f"/v1/campaigns/{cid}/ab",
            results_url=f"/v1/campaigns/{cid}/ab/results", variants={n: a.id for n, a in accepted.items()})

    async def _admit(self, spec: CampaignSpec, search: SearchConfig) -> CampaignAccepted:
        renderer = self._renderer_of(spec.renderer)
        capacity = await renderer.capacity()  # batch size x the renderer's largest replica count
        follow = None
        if spec.concurrency:  # the user's fixed figure
            concurrency = ceiling = spec.concurrency
        else:  # sized from the replicas running now, following them while the campaign runs
            ceiling = intent_concurrency(search, capacity)

            async def follow() -> int:
                live = await renderer.live_replicas()
                return intent_concurrency(search, capacity.model_copy(update={"replicas": live}))

            try:
                concurrency = await follow()
            except Exception as exc:  # noqa: BLE001 - Serve's status unreadable: size for the largest count
                logger.warning("could not read the renderer's live replicas (%s); concurrency from its maximum", exc)
                concurrency = ceiling
        if problem := budget_problem(spec, search, self.planners is not None):
            field = "budget_device_seconds" if spec.budget_device_seconds is not None else "budget_images"
            raise validation_error([{"loc": (field,), "msg": problem}])
        if problem := review_problem(spec, self.planners is not None):
            raise validation_error([{"loc": ("review",), "msg": problem}])
        cid = spec.campaign_id()
        # With planner workers the store is one every node reaches (their requirement), so the renderer writes the
        # images to it itself and only the critic's copies travel back to the workers.
        runner = CampaignRunner(spec, search, renderer, self.rewriter_llm, self._store(cid),
                                renderer_stores=True if self.planners is not None else None,
                                models=self.renderer_models[spec.renderer],
                                concurrency=concurrency, critic_llm=self.critic_llm, planners=self.planners,
                                concurrency_now=follow, max_concurrency=ceiling)
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

    @api.get("/v1/campaigns", response_model=CampaignPage, dependencies=V1)
    async def list_campaigns(
        self,
        limit: int = Query(50, ge=1, le=MAX_PAGE, description="At most this many campaigns."),
        cursor: str | None = Query(None, max_length=MAX_NAME_CHARS,
                                   description="The next_cursor of the previous page; unset: the first page."),
    ) -> CampaignPage:
        """The campaigns in the store, in id order: id, state, progress and created time. Page with ``limit`` and
        the previous page's ``next_cursor`` (null on the last page)."""

        def page() -> CampaignPage:
            fs, base = fsspec.core.url_to_fs(self.config.store_root)
            try:
                names = sorted(posixpath.basename(p.rstrip("/")) for p in fs.ls(base, detail=False))
            except FileNotFoundError:
                names = []
            listed: list[CampaignListing] = []
            for name in names:
                if not is_safe_name(name) or (cursor is not None and name <= cursor):
                    continue
                item = self._listing(name)
                if item is None:
                    continue  # a folder that holds no campaign
                if len(listed) == limit:
                    return CampaignPage(campaigns=listed, next_cursor=listed[-1].id)
                listed.append(item)
            return CampaignPage(campaigns=listed)

        return await asyncio.to_thread(page)

    def _listing(self, campaign_id: str) -> CampaignListing | None:
        """One line of the list (blocking: store reads). Running here: the runner's live status; else the compiled
        status; else a run that ended without compiling: counted from its committed parts."""
        store = campaign_store(self.config.store_root, campaign_id)
        try:
            manifest = store.read_manifest()
        except (StoreFormatError, ValueError):
            return None
        if manifest is None:
            return None
        if campaign_id in self._running():
            st = self.runs[campaign_id][0].status
            state, finished = st.state, st.intents_finished
        elif (st := store.read_status()) is not None:
            state, finished = st.state, st.intents_finished
        else:
            finished = len(store.done_intents())
            state = (CampaignState.done if finished >= manifest.intents else
                     CampaignState.running if self.registry.contains(campaign_id) else CampaignState.cancelled)
        return CampaignListing(id=campaign_id, state=state, intents_total=manifest.intents,
                               intents_finished=finished, created_at=manifest.created_at)

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
            if (ab := await asyncio.to_thread(store.read_ab)) is not None:
                raise HTTPException(404, f"campaign {campaign_id!r} is a model A/B of "
                                         f"{' and '.join(ab.campaigns.values())}: GET /v1/campaigns/{campaign_id}/ab")
            raise HTTPException(404, f"no campaign {campaign_id!r}")

        def fold() -> CampaignStatus:  # a run that ended without compiling (its process died): fold the parts
            tally = CampaignTally.of((p.outcome for p in store.iter_parts(manifest.intent_ids)), manifest.intents)
            finished = tally.summary().intents_finished == manifest.intents
            # registered but not run here yet: this ingress is about to resume it
            unfinished = CampaignState.running if self.registry.contains(campaign_id) else CampaignState.cancelled
            return tally.status(campaign_id, CampaignState.done if finished else unfinished, manifest.created_at,
                                rewriter_knows=manifest.rewriter_knows or None)

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

    @api.get("/v1/campaigns/{campaign_id}/lessons", response_model=list[Lesson], dependencies=V1)
    async def lessons(self, campaign_id: str) -> list[Lesson]:
        """The campaign's memory: lessons (phrase -> phrase) with their evidence (tries, wins, losses, mean gain,
        examples), supported ones first. Live while the campaign runs; [] when memory is off or nothing was learned."""
        if campaign_id in self.runs and (memory := self.runs[campaign_id][0].memory) is not None:
            return memory.lessons()
        store = self._store(campaign_id)
        if await asyncio.to_thread(store.read_manifest) is None:
            raise HTTPException(404, f"no campaign {campaign_id!r}")
        return await asyncio.to_thread(store.read_lessons)

    @api.get("/v1/campaigns/{campaign_id}/images/{name}", dependencies=V1)
    async def image(self, campaign_id: str, name: str) -> Response:
        store = self._store(campaign_id)
        try:
            png = await asyncio.to_thread(store.read_image, name)
        except FileNotFoundError as exc:
            raise HTTPException(404, f"no image {name[:120]!r} in campaign {campaign_id!r}") from exc
        return Response(png, media_type="image/png")

    @api.delete("/v1/campaigns/{campaign_id}", response_model=CampaignStatus | ABComparison, dependencies=V1)
    async def cancel(self, campaign_id: str) -> CampaignStatus | ABComparison:
        """Cancel a running campaign (a model A/B: both variants). Finished intents stay; resubmitting resumes it."""
        if campaign_id not in self.runs:
            ab = await asyncio.to_thread(self._store(campaign_id).read_ab)
            if ab is not None:
                for cid in ab.campaigns.values():
                    await self._stop(cid)
                return await self.ab(campaign_id)
            raise HTTPException(404, f"no running campaign {campaign_id[:120]!r}")
        runner, task = self.runs[campaign_id]
        if task is None:
            raise HTTPException(409, f"campaign {campaign_id!r} is still starting; retry in a moment")
        await self._stop(campaign_id)
        return runner.status

    async def budget(self, campaign_id: str, intent_id: str, op: str, **kwargs) -> int:
        """A planner worker's call to a running campaign's budget (not an HTTP route: Serve handles only;
        :meth:`pipelines.campaign.CampaignRunner.remote_budget`)."""
        if campaign_id not in self.runs:
            raise KeyError(f"campaign {campaign_id!r} is not running here")
        return await self.runs[campaign_id][0].remote_budget(intent_id, op, **kwargs)

    async def _stop(self, campaign_id: str) -> None:
        """Cancel a campaign's run here, if it is running (it leaves the registry: a user's cancel)."""
        task = self.runs.get(campaign_id, (None, None))[1]
        if task is not None and not task.done():
            self.cancelled_by_user.add(campaign_id)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _ab_manifest(self, campaign_id: str) -> ABManifest:
        store = self._store(campaign_id)
        manifest = await asyncio.to_thread(store.read_ab)
        if manifest is None:
            exists = await asyncio.to_thread(store.read_manifest) is not None
            raise HTTPException(404, f"campaign {campaign_id!r} is not a model A/B" if exists else
                                f"no campaign {campaign_id!r}")
        return manifest

    @api.get("/v1/campaigns/{campaign_id}/ab", response_model=ABComparison, dependencies=V1)
    async def ab(self, campaign_id: str) -> ABComparison:
        """A model A/B's two variants side by side (accuracy with its interval, mean best score, images, render
        seconds, cost per solved intent, each variant over its own baseline) and the paired difference of the second
        minus the first over the intents both finished (pipelines/ab.py). Live while the variants run."""
        manifest = await self._ab_manifest(campaign_id)
        states = {}
        for name, cid in manifest.campaigns.items():
            states[name] = (self.runs[cid][0].state if cid in self.runs else
                            await asyncio.to_thread(stored_state, self.config.store_root, cid))
        return await asyncio.to_thread(read_comparison, self.config.store_root, manifest, states)

    @api.get("/v1/campaigns/{campaign_id}/ab/results", dependencies=V1)
    async def ab_results(self, campaign_id: str) -> StreamingResponse:
        """One line per intent, in campaign order: its text and each variant's IntentOutcome (null until that variant
        finished it). A variant's images: GET /v1/campaigns/<its campaign>/images/<name>."""
        manifest = await self._ab_manifest(campaign_id)
        ids, outcomes = await asyncio.to_thread(read_variants, self.config.store_root, manifest)
        lines = (line.model_dump_json() + "\n" for line in joined(ids, outcomes))
        return StreamingResponse(lines, media_type="application/x-ndjson")

    @api.get("/healthz", response_model=Health)
    async def healthz(self) -> Health:
        """Liveness, the models served and the app's code version (unchanged by in-place config updates)."""
        return Health(preset=self.preset.name, models=self.models, code_version=serve.get_replica_context().code_version)

    # -- a human in the loop (agents.steering, pipelines.steering) ------------------------------------------------

    @api.post("/v1/campaigns/{campaign_id}/actions", status_code=201, response_model=HumanAction, dependencies=V1,
              responses={200: {"model": HumanAction, "description": "The same action was posted before: stored one."}},
              openapi_extra=ACTION_BODY)
    async def post_action(self, campaign_id: str, request: Request, response: Response,
                          who: str = Depends(require_token)) -> HumanAction:
        """A person's action on an intent of a running (or resumable) campaign: pin or veto a branch, add a prompt to
        its next round, or accept it while it waits for review. Recorded with the token's name and the server's time,
        stored before it is answered (201). Idempotent: the same ``id`` with the same body answers the stored action
        (200); with another body, 409. 404: no such campaign or intent; 409: the intent is finished; 422: a pin or veto
        naming no branch (``target``), a prompt the output filter refuses (``prompt``); 413 over 64 KiB."""
        body = parse_action(await read_body(request, MAX_ACTION_BYTES), request.headers.get("content-type"))
        store = self._store(campaign_id)
        manifest = await asyncio.to_thread(store.read_manifest)
        if manifest is None:
            raise HTTPException(404, f"no campaign {campaign_id!r}")
        async with self.actions_posted.setdefault(campaign_id, asyncio.Lock()):
            stored = await asyncio.to_thread(store.read_action, body.intent_id, body.id)
            if stored is not None:
                if stored.request() != body:
                    raise HTTPException(409, f"action {body.id!r} was posted before with another body (by "
                                             f"{stored.by!r}); choose a new id")
                response.status_code = 200
                return stored

            def checked() -> None:
                known = body.intent_id in manifest.intent_ids
                finished = known and store.read_part(body.intent_id) is not None
                checkpoint = store.read_checkpoint(body.intent_id) if known else None
                check_action(body, manifest.intent_ids, finished, checkpoint)

            try:
                await asyncio.to_thread(checked)
            except ActionRefused as exc:
                if exc.status == 422:
                    raise validation_error([{"loc": (exc.field,), "msg": str(exc)}]) from exc
                raise HTTPException(exc.status, str(exc)) from exc
            action = HumanAction(**body.model_dump(), by=who, at=time.time())
            await asyncio.to_thread(store.write_action, action)
        if campaign_id in self.runs:
            self.runs[campaign_id][0].wake(action.intent_id)
        return action

    @api.get("/v1/campaigns/{campaign_id}/actions", response_model=list[HumanAction], dependencies=V1)
    async def list_actions(
        self, campaign_id: str,
        intent: str | None = Query(None, max_length=128, pattern=SAFE_NAME, description="Only this intent's."),
    ) -> list[HumanAction]:
        """People's actions on the campaign (who, when), in the order they were posted per intent, intents in id
        order. Whether and how each took effect: the intent's ``human_actions`` in its results."""
        store = self._store(campaign_id)
        if await asyncio.to_thread(store.read_manifest) is None:
            raise HTTPException(404, f"no campaign {campaign_id!r}")

        def read() -> list[HumanAction]:
            intents = [intent] if intent is not None else store.acted_intents()
            return [a for i in intents for a in store.read_actions(i)]

        return await asyncio.to_thread(read)

    @api.get("/v1/campaigns/{campaign_id}/review", response_model=ReviewListing, dependencies=V1)
    async def review(self, campaign_id: str) -> ReviewListing:
        """The intents waiting for a person (their best score stayed under ``CampaignSpec.review.threshold``): each
        with its best image and its branches (prompt, score, candidate ids, pinned/vetoed/in the beam), waiting since
        and until when. Act on one with POST .../actions."""
        store = self._store(campaign_id)
        manifest = await asyncio.to_thread(store.read_manifest)
        if manifest is None:
            raise HTTPException(404, f"no campaign {campaign_id!r}")
        review = self.runs[campaign_id][0].spec.review if campaign_id in self.runs else manifest.review
        waiting = await asyncio.to_thread(store.waiting_checkpoints)
        return ReviewListing(campaign=campaign_id, threshold=review.threshold if review else None,
                             timeout_s=review.timeout_s if review else None,
                             intents=[waiting_intent(cp, review) for cp in waiting])
