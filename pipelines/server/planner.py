"""Planner workers: where a campaign's intents are searched when the Serve app runs the ``planner`` deployment
(``AppConfig.planner_workers``). The ingress admits a campaign, hands its intents out one at a time, follows them and
folds what comes back; each intent's search (rewriter and critic calls, renders, checkpoints, the image writes and the
commit of its part) runs in a :class:`PlannerWorker` replica, which Ray places on any node and Serve autoscales on its
own. Without the deployment, the ingress searches intents in its own process (the same
:func:`pipelines.campaign.plan_intent`).

What each side owns:

- **the ingress's runner** (:class:`pipelines.campaign.CampaignRunner`): which intents are left, how many run at once
  (following the renderer's live replicas), the campaign's tally and status, and the campaign's memory (lessons): one
  record, written by the runner only;
- **a worker**: one intent at a time per call, with a copy of the lessons as they were when the intent was handed
  out; it commits the intent's part to the store itself (whole or absent) and answers with it and what its copy of
  the memory did, which the runner replays (:meth:`agents.memory.CampaignMemory.replay`).

A worker that dies mid-intent fails the call with an actor error; the runner's client retries it
(:func:`serving.clients.with_retries`, the one retry policy) and Serve routes the retry to a live replica, which
continues from the intent's last checkpointed round. A worker that committed and died before answering: the retry
finds the part and returns it without searching again, so every intent commits exactly once. The store must be one
every node reaches (an object store, or a filesystem the nodes share).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ray import serve

from agents.budget import ImageBudget
from agents.critic import Critic
from agents.memory import CampaignMemory
from agents.ports import LanguageModel, Renderer
from agents.rewriter import Rewriter
from agents.safety import KeywordModerator, OutputFilter
from pipelines.campaign import CampaignRenderer, IntentDone, IntentJob, make_agent, plan_intent
from pipelines.records import DEFAULT_RENDERER, ModelsRecord
from pipelines.server.configs import AppConfig
from pipelines.steering import StoreSteering
from pipelines.store import campaign_store
from serving.clients import ServeLanguageModel, ServeRenderer, open_role_models, with_retries
from serving.retry import RetryPolicy

logger = logging.getLogger(__name__)

MAX_BUDGETS = 64
"""In-flight image budgets a worker keeps (one per campaign it has served lately)."""


class PlannerWorker:
    """The ``planner`` deployment: searches one intent per :meth:`run` call, with the same model deployments (and
    endpoints) as the ingress. Many calls run at once on one replica (one asyncio loop; the models do the work)."""

    def __init__(self, diffusion, llm, config: AppConfig, llm_client: Callable[[Any], Any] = ServeLanguageModel,
                 renderers: dict[str, Any] | None = None):
        self.config = config
        preset = config.resolve()
        self.models = ModelsRecord.of(preset)
        self.renderer = ServeRenderer(diffusion)
        # a job names the renderer deployment its campaign renders on (CampaignSpec.renderer)
        self.renderers = {DEFAULT_RENDERER: self.renderer,
                          **{name: ServeRenderer(h) for name, h in (renderers or {}).items()}}
        self.llm = None if llm is None else llm_client(llm)
        self.rewriter_llm, self.critic_llm = open_role_models(preset.endpoints, self.llm)
        # The in-flight image cap holds per worker and campaign (a campaign's cap times its busy workers in all).
        self.budgets: dict[str, ImageBudget] = {}
        try:
            context = serve.get_replica_context()
            self.name, self.app_name = context.replica_id.unique_id, context.app_name
        except Exception:  # noqa: BLE001 - constructed outside Serve (tests)
            self.name, self.app_name = "local", None
        self._ingress = None  # the ingress's handle, for budget calls (made on the first budgeted job)

    async def _budget_call(self, campaign_id: str, intent_id: str, op: str, **kwargs) -> int:
        """One call to the campaign's allocator, which lives with its runner in the ingress. Not retried: a grant
        whose answer was lost stays granted (counted, never over the budget); the intent fails and is retried."""
        if self._ingress is None:
            self._ingress = serve.get_deployment_handle("ingress", app_name=self.app_name)
        return await self._ingress.budget.remote(campaign_id, intent_id, op, **kwargs)

    def _budget(self, job: IntentJob) -> ImageBudget:
        budget = self.budgets.pop(job.campaign_id, None) or ImageBudget(job.max_image_bytes_in_flight)
        self.budgets[job.campaign_id] = budget  # most recent last; the oldest idle ones go first
        for cid in [c for c, b in self.budgets.items() if b.held == 0][: max(0, len(self.budgets) - MAX_BUDGETS)]:
            del self.budgets[cid]
        return budget

    async def run(self, job: IntentJob) -> IntentDone:
        return await run_job(job, renderer=self.renderers[job.renderer], rewriter_llm=self.rewriter_llm,
                             critic_llm=self.critic_llm, models=self.models, store_root=self.config.store_root,
                             image_budget=self._budget(job), worker=self.name, budget_call=self._budget_call)


class RemoteAllowance:
    """A worker's view of its intent's share of the campaign budget (:class:`agents.allocation.IntentAllowance`'s
    interface): each call goes to the runner's allocator through the ingress, so one ledger, written by the runner
    only, grants every round of every worker. Releasing is the runner's, once the job returns."""

    def __init__(self, call: Callable[..., Awaitable[int]], campaign_id: str, intent_id: str, settles: bool):
        self.call, self.campaign_id, self.intent_id = call, campaign_id, intent_id
        self.settles = settles  # a device-seconds budget charges each round what it took; an image budget at grant

    async def available(self, improving: bool) -> int:
        return await self.call(self.campaign_id, self.intent_id, "available", improving=improving)

    async def grant(self, wanted: int, improving: bool) -> int:
        return await self.call(self.campaign_id, self.intent_id, "grant", wanted=wanted, improving=improving)

    async def settle(self, images: int, seconds: float) -> None:
        if self.settles:
            await self.call(self.campaign_id, self.intent_id, "settle", images=images, seconds=seconds)

    def release(self) -> None:
        """The runner releases the intent's allowance when the job returns."""


async def run_job(job: IntentJob, *, renderer: Renderer, rewriter_llm: LanguageModel | None,
                  critic_llm: LanguageModel | None, models: ModelsRecord, store_root: str, image_budget: ImageBudget,
                  worker: str, budget_call: Callable[..., Awaitable[int]] | None = None) -> IntentDone:
    """One job, as a worker runs it: the campaign's store opened from its root, the agents the preset names, a
    recording copy of the campaign's lessons; the intent searched and committed (:func:`plan_intent`)."""
    notes: list[str] = []
    store = campaign_store(store_root, job.campaign_id)
    store.on_retry = notes.append
    memory = None
    if job.lessons is not None:
        memory = CampaignMemory(job.search.memory, OutputFilter(KeywordModerator()), job.lessons)
        memory.record()
    part = await plan_intent(
        job.intent,
        renderer=CampaignRenderer(renderer, job.campaign_id, store if job.renderer_stores else None),
        rewriter=make_agent(models.rewriter, Rewriter, rewriter_llm, job.rewriter),
        critic=make_agent(models.critic, Critic, critic_llm or rewriter_llm, job.critic),
        search=job.search, store=store, memory=memory, image_budget=image_budget, runs_baseline=job.runs_baseline,
        steering=StoreSteering(store, None),  # people's actions from the shared store (review: refused at submit)
        allowance=(RemoteAllowance(budget_call, job.campaign_id, job.intent.id, job.budget == "device_seconds")
                   if job.budget is not None else None),
    )
    return IntentDone(part=part, memory=None if memory is None else memory.take_delta(), worker=worker,
                      notes=notes[-5:])


class ServePlanners:
    """The runner's client of the planner deployment: one call per intent, retried on infrastructure errors (a
    worker died or Serve shed the call) by the one retry policy; an error from the search itself fails at once."""

    def __init__(self, handle, retry: RetryPolicy | None = None):
        self.handle = handle
        self.retry = retry or RetryPolicy()

    async def run(self, job: IntentJob) -> IntentDone:
        return await with_retries(lambda: self.handle.run.remote(job), self.retry, "plan")
