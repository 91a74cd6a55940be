"""The campaign image budget (agents.allocation, CampaignSpec.budget_images): the allocator's rule, the status, and
campaigns run through the runner with scripted fakes: never over budget (concurrency, a failed and resumed intent),
an intent that passes early frees images a harder one uses, and no budget changes nothing."""

from __future__ import annotations

import asyncio
import json

import pytest

from agents.allocation import ImageAllocator, projected_finish_s
from agents.messages import Intent, RewriteContext, RewriteReply
from pipelines.campaign import CampaignRunner
from pipelines.records import CampaignSpec, ModelsRecord
from pipelines.store import CampaignStore
from pipelines.testing.fakes import FakeRenderer, ScriptedCritic, ScriptedLLM
from pipelines.wire import CampaignState

# -- a world with an easy and a hard kind of intent -------------------------------------------------------------------
# "easy ..." intents: the rewriter proposes "<prompt> done" in round 0, which passes (score 1.0 >= threshold).
# every other intent: each round's "<prompt> more" child scores a little higher and never passes, so it keeps
# improving for as long as it gets images.


class LadderRewriter:
    async def propose(self, context: RewriteContext, *, request_id: str, seed: int, temperature: float) -> RewriteReply:
        cur = context.current_prompt
        words = ["done", "plain"] if context.intent.text.startswith("easy") else ["more", "extra"]
        return RewriteReply(prompts=[f"{cur} {w}" for w in words][: context.k])


def ladder_score(prompt: str, seed: int) -> tuple[float, float, bool]:
    words = prompt.split()
    if "done" in words:
        return 10.0, 10.0, True
    return min(9.0, 2.0 + words.count("more")), 5.0, False


def ladder_rewriter(llm, config):
    return LadderRewriter()


def ladder_critic(llm, config):
    return ScriptedCritic(ladder_score, config)


MODELS = ModelsRecord(preset="fake", diffusion="fake-sd", diffusion_dtype="auto", llm=None, llm_dtype=None,
                      rewriter="tests.test_allocation:ladder_rewriter", critic="tests.test_allocation:ladder_critic")
SEARCH = {"beam_width": 1, "candidates_per_beam": 2, "rounds": 6, "seeds_per_prompt": 1, "max_images": 24,
          "score_threshold": 0.9, "patience": 2, "run_baseline": False}
# a full run: round 0 renders 3 images (the intent and 2 rewrites), each later round 2: 3 + 5 x 2 = 13 for a hard
# intent; an easy one passes in round 0 (3 images)


def spec(intents, budget=None, rule="adaptive", concurrency=1, **search) -> CampaignSpec:
    return CampaignSpec(intents=intents, search={**SEARCH, **search}, concurrency=concurrency, budget_images=budget,
                        budget_rule=rule)


def run(s: CampaignSpec, store: CampaignStore, renderer: FakeRenderer | None = None) -> CampaignRunner:
    runner = CampaignRunner(s, s.search_config(), renderer or FakeRenderer(), None, store, models=MODELS)
    asyncio.run(runner.run())
    return runner


def search_images(store: CampaignStore, s: CampaignSpec) -> dict[str, int]:
    return {o.intent_id: o.search.counts.images for o in store.iter_outcomes([i.id for i in s.intents])}


def rendered(renderer: FakeRenderer) -> int:
    return sum(1 for call in renderer.calls for r in call if "/baseline/" not in r.request_id)


# -- the allocator's rule ---------------------------------------------------------------------------------------------


def test_even_shares_then_an_early_stop_frees_its_share_for_an_improving_intent_only():
    a = ImageAllocator(20, ["a", "b", "c"], max_per_intent=12, unit=2)
    assert (a.share, a.pool) == (6, 2)  # 20 // 3 = 6 each; the remainder starts in the pool
    assert a.grant("a", 4, improving=False) == 4
    assert a.grant("b", 8, improving=False) == 6  # its own share only
    assert a.grant("b", 4, improving=True) == 2  # improving: the pool (2)
    a.release("a")  # stopped after 4 of its 6: 2 go to the pool
    assert a.pool == 2
    assert a.grant("b", 4, improving=False) == 0  # not improving: no pool
    assert a.grant("c", 9, improving=True) == 8  # own 6 + pool 2, whole units
    assert a.spent == 20 and a.remaining == 0 and a.pool == 0
    assert a.grant("c", 2, improving=True) == 0


def test_the_per_intent_cap_and_the_even_rule():
    a = ImageAllocator(100, ["a", "b"], max_per_intent=30, unit=1)
    assert (a.share, a.pool) == (30, 40)  # capped shares; the rest is pool
    assert a.grant("a", 50, improving=True) == 30  # never past max_per_intent
    even = ImageAllocator(20, ["a", "b"], max_per_intent=30, unit=1, rule="even")
    even.release("a")
    assert even.grant("b", 20, improving=True) == 10  # even: no pool, ever


def test_a_restored_ledger_counts_earlier_grants_and_finished_intents():
    a = ImageAllocator(12, ["a", "b", "c"], max_per_intent=12, granted={"a": 2, "b": 5}, finished=["a"])
    assert a.spent == 7 and a.spent_at_start == 7
    assert a.pool == 12 - 2 - 5 - 4  # a spent 2 (finished), b holds 5 (> its share 4), c holds 4
    with pytest.raises(ValueError, match="exceed"):
        ImageAllocator(4, ["a"], max_per_intent=12, granted={"a": 5})


def test_random_grants_and_releases_never_pass_the_budget():
    import random

    rng = random.Random(0)
    for _ in range(200):
        ids = [f"i{k}" for k in range(rng.randint(1, 8))]
        a = ImageAllocator(rng.randint(1, 60), ids, max_per_intent=rng.randint(1, 20), unit=rng.randint(1, 3),
                           rule=rng.choice(["adaptive", "even"]))
        for _ in range(50):
            i = rng.choice(ids)
            if rng.random() < 0.2:
                a.release(i)
            else:
                n = a.grant(i, rng.randint(0, 10), improving=rng.random() < 0.5)
                assert n % a.unit == 0 and a.granted[i] <= a.max_per_intent
            assert sum(a.granted.values()) == a.spent <= a.budget and a.pool >= 0


def test_projected_finish_is_the_sooner_of_budget_and_intents():
    assert projected_finish_s(10.0, spent=50, remaining=100, finished=1, unfinished=9) == pytest.approx(20.0)
    assert projected_finish_s(10.0, spent=50, remaining=100, finished=5, unfinished=5) == pytest.approx(10.0)
    assert projected_finish_s(10.0, spent=0, remaining=100, finished=0, unfinished=5) is None
    assert projected_finish_s(10.0, spent=10, remaining=0, finished=1, unfinished=5) == 0.0


# -- through the runner -----------------------------------------------------------------------------------------------


def test_an_intent_that_passes_early_frees_images_that_a_harder_intent_uses(tmp_path):
    intents = [Intent(id="e", text="easy box"), Intent(id="h", text="hard scene")]
    results = {}
    for rule in ("adaptive", "even"):
        s = spec(intents, budget=16, rule=rule)
        store = CampaignStore(str(tmp_path / rule))
        renderer = FakeRenderer()
        runner = run(s, store, renderer)
        images = search_images(store, s)
        assert sum(images.values()) == rendered(renderer) == runner.allocator.spent <= 16
        results[rule] = images
        status = runner.status
        assert (status.budget_images, status.images_spent) == (16, runner.allocator.spent)
        assert status.images_remaining == 16 - status.images_spent and status.projected_finish_s is None  # ended
        assert json.loads(store.fs.cat_file(store.path("budget.json")))["granted"] == runner.allocator.snapshot()
    assert results["adaptive"]["e"] == results["even"]["e"] == 3  # passes in round 0
    assert results["even"]["h"] == 8  # its even share, no more
    assert results["adaptive"]["h"] == 13 > 8  # its share and what the easy intent did not spend
    stops = {o.intent_id: o.search.stop_reason for o in CampaignStore(str(tmp_path / "even")).iter_outcomes(["e", "h"])}
    assert stops == {"e": "threshold", "h": "budget"}


def test_without_a_budget_or_with_one_that_never_binds_nothing_changes(tmp_path):
    intents = [Intent(id="e", text="easy box"), Intent(id="h", text="hard scene"), Intent(id="h2", text="hard two")]
    lineages = {}
    for name, budget in (("none", None), ("ample", 3 * 24)):
        s = spec(intents, budget=budget, run_baseline=True)
        store = CampaignStore(str(tmp_path / name))
        runner = run(s, store)
        assert runner.status.budget_images == budget
        if budget is None:
            assert runner.allocator is None and runner.status.images_spent is None
            assert not store.fs.exists(store.path("budget.json"))
        lineages[name] = sorted((r.id, r.mode, r.prompt, r.seed, r.score) for r in store.iter_lineage())
    assert lineages["none"] == lineages["ample"] and lineages["none"]


def test_concurrent_intents_never_pass_the_budget(tmp_path):
    intents = [Intent(id=f"{kind}{k}", text=f"{kind} thing {k}") for k in range(6) for kind in ("easy", "hard")]
    for budget in (24, 50, 97):
        s = spec(intents, budget=budget, concurrency=5, run_baseline=True)
        store = CampaignStore(str(tmp_path / str(budget)))
        renderer = FakeRenderer()
        runner = run(s, store, renderer)
        assert runner.state is CampaignState.done
        spent = sum(search_images(store, s).values())
        assert spent == rendered(renderer) == runner.allocator.spent <= budget
        # the baseline arm renders as many images as the search, intent by intent
        assert sum(o.baseline.counts.images for o in store.iter_outcomes([i.id for i in intents])) == spent


def test_a_failed_and_resumed_intent_counts_what_it_was_granted(tmp_path):
    intents = [Intent(id="e", text="easy box"), Intent(id="h", text="hard scene"), Intent(id="g", text="hard two")]
    s = spec(intents, budget=30, concurrency=3)
    store = CampaignStore(str(tmp_path / "c"))
    flaky = FakeRenderer()
    flaky.fail_on = "h/r2/"  # round 2 of h is granted, then its render fails
    first = run(s, store, flaky)
    assert (first.status.intents_done, first.status.intents_failed) == (2, 1)
    granted_first = first.allocator.granted["h"]
    assert granted_first > store.read_checkpoint("h").search.counts.images  # the failed round's grant counts
    renderer = FakeRenderer()
    second = run(s, store, renderer)
    assert second.state is CampaignState.done
    assert second.allocator.spent_at_start == first.allocator.spent
    assert rendered(flaky) + rendered(renderer) <= second.allocator.spent <= 30


def test_budget_refusals(tmp_path):
    intents = [Intent(id=f"i{k}", text=f"hard {k}") for k in range(4)]
    s = spec(intents, budget=3)
    with pytest.raises(ValueError, match="at least one prompt per intent"):
        CampaignRunner(s, s.search_config(), FakeRenderer(), None, CampaignStore(str(tmp_path / "a")), models=MODELS)
    s = spec(intents, budget=40)
    assert spec(intents).campaign_id() != s.campaign_id()  # the budget is part of the campaign's identity


def test_budget_problem_is_what_the_ingress_refuses_with_422():
    from pipelines.campaign import budget_problem

    intents = [Intent(id=f"i{k}", text=f"hard {k}") for k in range(4)]
    s = spec(intents, budget=40)
    assert budget_problem(s, s.search_config(), planner_workers=False) is None
    assert budget_problem(s, s.search_config(), planner_workers=True) is None  # workers ask the runner's allocator
    assert "at least one prompt per intent" in budget_problem(spec(intents, budget=3), s.search_config())
    assert budget_problem(spec(intents), s.search_config(), planner_workers=True) is None  # no budget: no problem


def test_a_running_campaign_reports_its_spend_and_a_projected_finish(tmp_path):
    intents = [Intent(id=f"{kind}{k}", text=f"{kind} thing {k}") for k in range(3) for kind in ("easy", "hard")]
    s = spec(intents, budget=40)
    seen = []
    runner = CampaignRunner(s, s.search_config(), FakeRenderer(), None, CampaignStore(str(tmp_path)), models=MODELS,
                            on_intent_done=lambda outcome: seen.append(runner.status))
    asyncio.run(runner.run())
    assert len(seen) == 6
    for status in seen[:-1]:
        assert status.state is CampaignState.running and status.budget_images == 40
        assert status.images_spent + status.images_remaining == 40 and status.projected_finish_s is not None
        assert status.projected_finish_s >= 0
    assert [st.images_spent for st in seen] == sorted(st.images_spent for st in seen)


def test_the_cli_sets_the_budget(tmp_path):
    from pipelines.cli import _load_spec

    campaign = tmp_path / "cats.jsonl"
    campaign.write_text('{"id": "a", "text": "a red cube"}\n{"id": "b", "text": "two dogs"}\n')
    s = _load_spec(campaign, None, {}, None, "all", "rewrite", 40, "even")
    assert (s.budget_images, s.budget_rule) == (40, "even")
    assert _load_spec(campaign, None, {}, None, "all").budget_images is None


def test_the_stored_status_of_a_finished_budgeted_campaign_keeps_its_budget_fields(tmp_path):
    """status.json (what GET answers once the ingress no longer runs the campaign) says what the budget was and what
    was spent, like the live status, with no projection."""
    s = CampaignSpec(intents=[Intent(id=f"i{k}", text=f"a red apple number {k}") for k in range(3)],
                     search={"beam_width": 2, "candidates_per_beam": 2, "rounds": 2, "seeds_per_prompt": 1,
                             "max_images": 8, "run_baseline": False}, concurrency=2, budget_images=12)
    store = CampaignStore(str(tmp_path / "c"))
    renderer = FakeRenderer()
    live = asyncio.run(CampaignRunner(s, s.search_config(), renderer, ScriptedLLM(renderer), store).run())
    stored = store.read_status()
    assert stored.state == "done" and stored.budget_images == 12 and stored.projected_finish_s is None
    assert stored.images_spent == live.images_spent <= 12 and stored.images_remaining == 12 - stored.images_spent


# -- a budget of device seconds -----------------------------------------------------------------------------------


class TimedRenderer(FakeRenderer):
    """FakeRenderer whose pipeline calls take ``fixed_s + per_image_s`` x batch of device time (as reported in
    RenderResult.render_seconds): a batch of one is the dearest per image, as on a GPU."""

    def __init__(self, per_image_s: float = 0.01, fixed_s: float = 0.01):
        super().__init__()
        self.per_image_s, self.fixed_s = per_image_s, fixed_s
        self.device_seconds = 0.0

    async def render(self, requests):
        results = await super().render(requests)
        seconds = self.fixed_s + self.per_image_s * len(requests)
        self.device_seconds += seconds
        return [r.model_copy(update={"render_seconds": seconds, "batch_size": len(requests)}) for r in results]


def test_device_second_grants_reserve_at_the_dearest_image_and_settle_to_what_the_round_took():
    from agents.allocation import PROBES, DeviceSecondsAllocator

    a = DeviceSecondsAllocator(1.0, ["x", "y"], seconds_per_image=0.02, unit=2, probe_ms=20)
    assert (a.budget, a.share, a.cost_ms, a.spent) == (1000, 490, 20, 20)  # shares split what the probe left
    x = a.for_intent("x")
    assert asyncio.run(x.available(improving=False)) == 24  # its share at 20 ms an image
    assert asyncio.run(x.grant(7, improving=False)) == 6  # whole prompts of 2 images
    assert a.granted["x"] == 120  # reserved at the dearest image
    asyncio.run(x.settle(6, 0.045))  # rendered in 45 ms: 75 ms go back
    assert a.granted["x"] == 45 and a.spent == 65 and a.overshoot == 0
    asyncio.run(x.settle(0, 0.0))  # nothing left to settle: no change
    assert a.granted["x"] == 45
    assert asyncio.run(x.grant(2, improving=False)) == 2
    asyncio.run(x.settle(2, 0.1))  # dearer than any image seen: charged in full, reported, and reserved by from now on
    assert a.overshoot == 60 and a.cost_ms == 50 and a.granted["x"] == 145
    assert a.snapshot() == {"x": 145, PROBES: 20}
    restored = DeviceSecondsAllocator(1.0, ["x", "y"], seconds_per_image=0.05, granted=a.snapshot(), finished=["x"])
    assert restored.spent == 165 and restored.probes == 20 and restored.pool == 1000 - 165 - 490


def test_random_device_second_rounds_never_pass_the_budget_while_no_image_is_dearer_than_the_probe():
    import random

    from agents.allocation import DeviceSecondsAllocator

    rng = random.Random(0)
    for _ in range(200):
        ids = [f"i{k}" for k in range(rng.randint(1, 6))]
        a = DeviceSecondsAllocator(rng.uniform(0.1, 3.0), ids, seconds_per_image=0.03, unit=rng.choice([1, 2]),
                                   rule=rng.choice(["adaptive", "even"]), probe_ms=30)
        allowances = {i: a.for_intent(i) for i in ids}
        for _ in range(40):
            i = rng.choice(ids)
            n = asyncio.run(allowances[i].grant(rng.randint(1, 8), rng.random() < 0.5))
            if n:
                asyncio.run(allowances[i].settle(n, n * rng.uniform(0.005, 0.03)))  # never dearer than the probe's 30 ms
            if rng.random() < 0.2:
                allowances[i].release()
            assert a.spent <= a.budget and a.overshoot == 0


def test_a_device_seconds_budget_through_the_runner_is_never_exceeded_and_survives_a_resume(tmp_path):
    intents = [Intent(id=f"{kind}{k}", text=f"{kind} thing {k}") for k in range(4) for kind in ("easy", "hard")]
    s = CampaignSpec(intents=intents, search=SEARCH, concurrency=3, budget_device_seconds=0.9)
    store = CampaignStore(str(tmp_path))
    renderer = TimedRenderer()
    renderer.fail_on = "hard2/r1"  # one intent fails mid-search (infrastructure): retried by the resume
    first = run(s, store, renderer)
    assert first.status.state is CampaignState.failed and first.status.intents_failed == 1
    renderer.fail_on = None
    second = run(s, store, renderer)
    st = second.status
    assert st.state is CampaignState.done and st.intents_done == 8
    ledger = json.loads(store.fs.cat_file(store.path("budget.json")))["granted"]
    assert ledger["@probes"] == 2 * 20  # one probe a run, each a batch of one: 10 + 10 ms
    assert st.budget_device_seconds == 0.9 and st.device_seconds_spent == sum(ledger.values()) / 1000 <= 0.9
    assert st.device_seconds_remaining == pytest.approx(0.9 - st.device_seconds_spent)
    assert st.device_seconds_overshoot == 0 and st.images_spent is None
    # what the search arm's images took (the lineage's shares), with the probes, is what was charged, at most
    shares = sum(c.timings["render_share_s"] for c in store.iter_lineage() if c.mode == "beam")
    assert shares + 0.04 <= st.device_seconds_spent + 1e-9 and renderer.device_seconds <= st.device_seconds_spent + 1e-9
    stops = [o.search.stop_reason for o in store.iter_outcomes([i.id for i in intents])]
    assert "budget" in stops  # the budget bound: hard intents ran out of device seconds
    calls = len(renderer.calls)
    third = run(s, store, renderer)  # nothing left: no probe, the ledger reported as it stands
    assert len(renderer.calls) == calls and third.status.device_seconds_spent == st.device_seconds_spent
    assert json.loads(store.fs.cat_file(store.path("budget.json")))["granted"] == ledger


def test_both_budgets_at_once_are_refused_and_the_device_seconds_budget_enters_the_id():
    from pydantic import ValidationError

    from pipelines.campaign import budget_problem

    intents = [Intent(id="a", text="a box")]
    with pytest.raises(ValidationError, match="not both"):
        CampaignSpec(intents=intents, budget_images=10, budget_device_seconds=1.0)
    s = CampaignSpec(intents=intents, budget_device_seconds=1.0)
    assert budget_problem(s, s.search_config(), planner_workers=True) is None
    assert s.campaign_id() != CampaignSpec(intents=intents, budget_device_seconds=2.0).campaign_id()


class BudgetedWorkers:
    """The planners port over run_job in this process (jobs and answers through JSON, as between processes), whose
    budget calls go to the runner's allocator as a worker's go through the ingress."""

    def __init__(self, root: str, renderer: FakeRenderer):
        self.root, self.renderer, self.runner, self.calls = root, renderer, None, []

    async def budget_call(self, campaign_id: str, intent_id: str, op: str, **kwargs) -> int:
        self.calls.append(op)
        return await self.runner.remote_budget(intent_id, op, **kwargs)

    async def run(self, job):
        from agents.budget import ImageBudget
        from pipelines.campaign import IntentDone, IntentJob
        from pipelines.server.planner import run_job

        job = IntentJob.model_validate_json(job.model_dump_json())
        assert job.budget is not None
        done = await run_job(job, renderer=self.renderer, rewriter_llm=None, critic_llm=None, models=MODELS,
                             store_root=self.root, image_budget=ImageBudget(job.max_image_bytes_in_flight),
                             worker="w", budget_call=self.budget_call)
        return IntentDone.model_validate_json(done.model_dump_json())


@pytest.mark.parametrize("kind", ["images", "device_seconds"])
def test_a_budget_on_planner_workers_grants_as_in_the_runners_process(tmp_path, kind):
    """Each worker asks the runner's allocator for its rounds: the grants, images and outcomes equal those of the same
    campaign searched in the runner's process, and the budget holds."""
    intents = [Intent(id=f"{k}{n}", text=f"{k} thing {n}") for n in range(3) for k in ("easy", "hard")]
    budget = {"budget_images": 20} if kind == "images" else {"budget_device_seconds": 0.5}
    s = CampaignSpec(intents=intents, search=SEARCH, concurrency=1, **budget)
    ledgers, images = {}, {}
    for where in ("here", "workers"):
        store = CampaignStore(str(tmp_path / where / s.campaign_id()))
        renderer = TimedRenderer()
        planners = BudgetedWorkers(str(tmp_path / where), renderer) if where == "workers" else None
        runner = CampaignRunner(s, s.search_config(), renderer, None, store, models=MODELS, planners=planners)
        if planners is not None:
            planners.runner = runner
        status = asyncio.run(runner.run())
        assert status.state is CampaignState.done and status.intents_done == 6, status
        ledgers[where] = json.loads(store.fs.cat_file(store.path("budget.json")))["granted"]
        images[where] = search_images(store, s)
        if planners is not None:
            assert {"available", "grant"} <= set(planners.calls) and not runner._remote_allowances
            assert ("settle" in planners.calls) == (kind == "device_seconds")
    assert ledgers["workers"] == ledgers["here"] and images["workers"] == images["here"]
    limit = 20 if kind == "images" else 500
    assert sum(ledgers["workers"].values()) <= limit
