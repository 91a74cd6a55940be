"""Planner workers without Ray: the job a worker runs (pipelines/server/planner.run_job) through the runner's
planners port, with every job and answer crossing as JSON as they would between processes; the concurrency gate that
follows the renderer's live replicas; campaign memory replayed from a worker's copy; each intent committed exactly
once when a worker dies after committing. tests/test_planner_serve.py runs the planner deployment on Serve."""

from __future__ import annotations

import asyncio

import pytest

from agents.budget import ImageBudget
from agents.config import MemoryConfig
from agents.memory import CampaignMemory, MemoryDelta
from agents.safety import OutputFilter
from pipelines.campaign import CampaignRunner, ConcurrencyGate, IntentDone, IntentJob
from pipelines.server.planner import ServePlanners, run_job
from pipelines.store import CampaignStore
from pipelines.testing.fakes import FakeRenderer
from serving.retry import RetryPolicy
from tests.test_memory import MODELS, campaign, outcomes


class LocalPlanners:
    """The planners port over :func:`run_job` in this process, each job and answer through JSON."""

    def __init__(self, root: str, renderer: FakeRenderer, lessons_seen: list[int] | None = None):
        self.root, self.renderer = root, renderer
        self.jobs: list[IntentJob] = []
        self.lessons_seen = lessons_seen

    async def run(self, job: IntentJob) -> IntentDone:
        job = IntentJob.model_validate_json(job.model_dump_json())
        self.jobs.append(job)
        done = await run_job(job, renderer=self.renderer, rewriter_llm=None, critic_llm=None, models=MODELS,
                             store_root=self.root, image_budget=ImageBudget(job.max_image_bytes_in_flight),
                             worker="w")
        return IntentDone.model_validate_json(done.model_dump_json())


def test_memory_learned_on_workers_is_the_campaigns(tmp_path):
    """The memory scenario of tests/test_memory.py (intent 'a' finds 'square', 'b' and 'c' are then solved by the
    lesson), with every intent searched by a worker: the lessons reach later intents through the runner's replay, and
    the stored lessons and outcomes equal an in-process run's."""
    spec = campaign(True)
    here_store = CampaignStore(str(tmp_path / "here" / spec.campaign_id()))
    asyncio.run(CampaignRunner(spec, spec.search_config(), FakeRenderer(), None, here_store, models=MODELS).run())
    remote_store = CampaignStore(str(tmp_path / "workers" / spec.campaign_id()))
    planners = LocalPlanners(str(tmp_path / "workers"), FakeRenderer())
    runner = CampaignRunner(spec, spec.search_config(), FakeRenderer(), None, remote_store, models=MODELS,
                            planners=planners)
    status = asyncio.run(runner.run())
    assert status.state == "done" and status.intents_done == 3
    assert [j.intent.id for j in planners.jobs] == ["a", "b", "c"]
    assert planners.jobs[0].lessons == [] and any(le.before == "box" for le in planners.jobs[1].lessons)
    here, there = outcomes(here_store, spec), outcomes(remote_store, spec)
    for intent_id in ("b", "c"):
        best = next(c for c in there[intent_id].lineage if c.id == there[intent_id].outcome.search.best_id)
        assert best.source == "lesson" and "square" in best.prompt
    assert {k: p.outcome.search.best_score for k, p in there.items()} == \
        {k: p.outcome.search.best_score for k, p in here.items()}
    assert remote_store.read_lessons() == here_store.read_lessons()
    assert remote_store.read_lessons()[0].applied >= 2  # applied lessons counted through the replay


def test_replaying_two_workers_copies_equals_observing_here():
    def obs(memory: CampaignMemory, intent: str, parent: str, child: str, gain: float) -> None:
        memory.observe(intent, parent, child, 0.3, 0.3 + gain, ["is it square?"] if gain > 0 else [])

    seen = [("a", "a box", "a square", 0.4), ("b", "a red box", "a red square", 0.3), ("c", "a box", "a cube", -0.2),
            ("c", "one box", "one square", 0.5)]
    here = CampaignMemory(MemoryConfig(enabled=True), OutputFilter())
    for s in seen:
        obs(here, *s)
    campaign_memory = CampaignMemory(MemoryConfig(enabled=True), OutputFilter())
    snapshot = campaign_memory.lessons()
    deltas = []
    for part in (seen[:2], seen[2:]):  # two workers, each from the same snapshot
        copy = CampaignMemory(MemoryConfig(enabled=True), OutputFilter(), snapshot)
        copy.record()
        for s in part:
            obs(copy, *s)
        deltas.append(MemoryDelta.model_validate_json(copy.take_delta().model_dump_json()))
    for delta in deltas:
        campaign_memory.replay(delta)
    assert campaign_memory.lessons() == here.lessons()
    assert campaign_memory.changed and sum(len(d.observations) for d in deltas) == 4


def test_a_worker_that_dies_after_committing_is_retried_and_the_intent_commits_once(tmp_path):
    """The first call for intent i1 commits and then fails as a dead replica would (ActorDiedError); the client
    retries and the retry returns the committed part without searching again."""

    class ActorDiedError(Exception):  # matched by class name, as serving/clients.is_transient does
        pass

    spec = campaign(False)
    renderer = FakeRenderer()
    local = LocalPlanners(str(tmp_path), renderer)
    calls: list[str] = []

    class Handle:  # a Serve handle's shape: handle.run.remote(job) -> awaitable
        class run:  # noqa: N801
            @staticmethod
            def remote(job: IntentJob):
                async def call():
                    calls.append(job.intent.id)
                    done = await local.run(job)
                    if job.intent.id == "b" and calls.count("b") == 1:
                        raise ActorDiedError("the replica died after committing")
                    return done
                return call()

    store = CampaignStore(str(tmp_path / spec.campaign_id()))
    planners = ServePlanners(Handle(), RetryPolicy(attempts=3, backoff_s=0.0))
    status = asyncio.run(CampaignRunner(spec, spec.search_config(), renderer, None, store, models=MODELS,
                                        planners=planners).run())
    assert status.state == "done" and status.intents_done == 3 and calls.count("b") == 2
    parts = list(store.iter_parts(["a", "b", "c"]))
    assert sorted(p.outcome.intent_id for p in parts) == ["a", "b", "c"]
    # b was searched once: every image rendered is one an outcome counts
    assert sum(len(c) for c in renderer.calls) == sum(p.outcome.images for p in parts)
    assert store.compile(["a", "b", "c"])[0] == 3


def test_a_failed_search_on_a_worker_fails_the_intent_not_the_campaign(tmp_path):
    class Broken(LocalPlanners):
        async def run(self, job):
            if job.intent.id == "b":
                raise ValueError("the rewriter's prompt template is broken")
            return await super().run(job)

    spec = campaign(False)
    store = CampaignStore(str(tmp_path / spec.campaign_id()))
    planners = ServePlanners(type("H", (), {"run": type("R", (), {"remote": staticmethod(
        lambda job: Broken(str(tmp_path), FakeRenderer()).run(job))})})(), RetryPolicy(attempts=3, backoff_s=0.0))
    status = asyncio.run(CampaignRunner(spec, spec.search_config(), FakeRenderer(), None, store, models=MODELS,
                                        planners=planners).run())
    assert status.state == "failed" and status.intents_done == 2 and status.intents_failed == 1
    assert "ValueError" in " ".join(status.errors) and store.done_intents() == {"a", "c"}


def test_the_gate_follows_a_changing_limit():
    async def scenario():
        gate = ConcurrencyGate(1)
        running, peak = 0, []

        async def work(release: asyncio.Event):
            nonlocal running
            async with gate:
                running += 1
                peak.append(running)
                await release.wait()
                running -= 1

        events = [asyncio.Event() for _ in range(4)]
        tasks = [asyncio.create_task(work(e)) for e in events]
        await asyncio.sleep(0.01)
        assert running == 1  # the limit is 1
        await gate.set_limit(3)
        await asyncio.sleep(0.01)
        assert running == 3  # raised: two more let in at once
        await gate.set_limit(1)
        events[0].set()
        events[1].set()
        await asyncio.sleep(0.01)
        assert running == 1  # lowered to 1: the fourth waits while one runs
        events[2].set()
        await asyncio.sleep(0.01)
        assert running == 1 and max(peak) == 3
        events[3].set()
        await asyncio.gather(*tasks)

    asyncio.run(scenario())


def test_the_runner_follows_the_renderers_live_replicas(tmp_path):
    """A campaign sized for 1 replica whose renderer scales to 3: the limit rises (up to the ceiling) on the next
    probe, and the status reports it."""
    spec = campaign(False).model_copy(update={"concurrency": None})
    live = [1]
    seen: list[int] = []

    async def concurrency_now() -> int:
        return live[0] * 2

    runner = CampaignRunner(spec, spec.search_config(), FakeRenderer(), None,
                            CampaignStore(str(tmp_path / "c")), models=MODELS, concurrency=2,
                            concurrency_now=concurrency_now, max_concurrency=4)

    async def scenario():
        assert runner.gate.limit == 2
        live[0] = 3
        await runner._follow_capacity()
        seen.append(runner.status.concurrency)
        live[0] = 1
        await runner._follow_capacity()
        seen.append(runner.status.concurrency)

        async def broken() -> int:
            raise ConnectionError("serve controller unreachable")

        runner.concurrency_now = broken
        await runner._follow_capacity()  # a failed probe keeps the limit
        seen.append(runner.gate.limit)

    asyncio.run(scenario())
    assert seen == [4, 2, 2]  # capped at the ceiling, then back down; unchanged on a failed probe


@pytest.mark.parametrize("concurrency", [1, 3])
def test_every_intent_once_through_workers(tmp_path, concurrency):
    spec = campaign(False).model_copy(update={"concurrency": concurrency})
    store = CampaignStore(str(tmp_path / spec.campaign_id()))
    planners = LocalPlanners(str(tmp_path), FakeRenderer())
    status = asyncio.run(CampaignRunner(spec, spec.search_config(), FakeRenderer(), None, store, models=MODELS,
                                        planners=planners).run())
    assert status.state == "done" and sorted(j.intent.id for j in planners.jobs) == ["a", "b", "c"]
    assert store.done_intents() == {"a", "b", "c"}
