"""Campaign runner, records and store with scripted fakes: every intent once, resume after a kill, flat failures, the
fingerprint, baseline policy, per-arm costs and the one fold."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from agents.config import SearchConfig
from agents.messages import CallCounts, Intent
from pipelines.campaign import CampaignConflict, CampaignRunner, intent_concurrency
from pipelines.records import ArmResult, CampaignSpec, IntentOutcome, LineageRecord, ModelsRecord
from pipelines.store import CampaignStore, StoreFormatError
from pipelines.tally import CampaignTally
from pipelines.testing.fakes import FakeRenderer, ScriptedLLM
from pipelines.wire import CampaignState
from serving.clients import RendererCapacity
from serving.presets import RenderDefaults, load_preset

ROOT = Path(__file__).resolve().parents[1]
SEARCH = {"beam_width": 2, "candidates_per_beam": 2, "rounds": 2, "seeds_per_prompt": 1, "max_images": 16}
MODELS = ModelsRecord(preset="fake", diffusion="fake-sd", diffusion_dtype="auto", llm="fake-vlm", llm_dtype="auto",
                      rewriter="llm", critic="llm")


def spec(n: int, **kw) -> CampaignSpec:
    kw.setdefault("search", SEARCH)
    return CampaignSpec(intents=[Intent(id=f"i{k}", text=f"a red apple number {k}") for k in range(n)],
                        concurrency=3, **kw)


def runner(s: CampaignSpec, store: CampaignStore, renderer=None, models: ModelsRecord = MODELS,
           defaults: RenderDefaults | None = None) -> CampaignRunner:
    renderer = renderer or FakeRenderer()
    return CampaignRunner(s, s.search_config(defaults), renderer, ScriptedLLM(renderer), store, models=models)


def read_results(path) -> list[IntentOutcome]:
    return [IntentOutcome.model_validate_json(line) for line in open(path)]


def read_lineage(path) -> list[LineageRecord]:
    return [LineageRecord.model_validate_json(line) for line in open(path)]


def test_campaign_writes_every_file_with_one_line_per_intent(tmp_path):
    s = spec(5)
    store = CampaignStore(str(tmp_path))
    status = asyncio.run(runner(s, store).run())
    assert status.state == CampaignState.done and status.intents_done == 5
    results = read_results(tmp_path / "results.jsonl")
    lineage = read_lineage(tmp_path / "lineage.jsonl")
    assert [r.intent_id for r in results] == [f"i{k}" for k in range(5)]
    for r in results:
        assert r.search.counts.images == r.baseline.counts.images <= 16  # equal budget
        assert (tmp_path / r.search.best_image).exists() and (tmp_path / r.baseline.best_image).exists()
        assert r.improvement == pytest.approx(r.search.best_score - r.baseline.best_score)
    assert len(lineage) == sum(r.images for r in results) == status.images_rendered
    assert all((tmp_path / c.image).exists() for c in lineage)
    manifest = store.read_manifest()
    assert manifest.intents == 5 and manifest.search.max_images == 16 and "diffusers" in manifest.versions
    assert manifest.models == MODELS
    assert store.read_status() == status  # the compiled status is what the run ended with


def test_records_embed_each_arms_call_counts_and_costs_add_up(tmp_path):
    s = spec(4)
    status = asyncio.run(runner(s, CampaignStore(str(tmp_path))).run())
    results = read_results(tmp_path / "results.jsonl")
    for r in results:
        assert type(r.search.counts) is CallCounts and type(r.baseline.counts) is CallCounts
        assert r.search.counts.llm_calls > r.baseline.counts.llm_calls > 0  # the search also asks the rewriter
    for arm, total in (("search", status.search_costs), ("baseline", status.baseline_costs)):
        for field in CallCounts.model_fields:
            assert getattr(total, field) == sum(getattr(getattr(r, arm).counts, field) for r in results), (arm, field)
    assert status.images_rendered == status.search_costs.images + status.baseline_costs.images
    assert status.improvement.n == 4 and status.improvement.wins + status.improvement.ties + status.improvement.losses == 4


def test_the_runner_status_equals_the_fold_of_the_stored_parts(tmp_path):
    s = spec(6)
    store = CampaignStore(str(tmp_path))
    status = asyncio.run(runner(s, store).run())
    folded = CampaignTally.of((p.outcome for p in store.iter_parts([i.id for i in s.intents])), 6).summary()
    assert folded.model_dump() == {k: v for k, v in status.model_dump().items() if k in folded.model_fields}


def test_status_has_constant_size(tmp_path):
    small = asyncio.run(runner(spec(3), CampaignStore(str(tmp_path / "a"))).run())
    large = asyncio.run(runner(spec(30), CampaignStore(str(tmp_path / "b"))).run())
    assert large.intents_done == 10 * small.intents_done
    assert abs(len(large.model_dump_json()) - len(small.model_dump_json())) < 64  # a few digits more, no per-intent list


def test_resume_after_a_kill_has_no_duplicated_and_no_missing_lines(tmp_path):
    s = spec(8)
    store = CampaignStore(str(tmp_path))
    finished: list[str] = []

    async def kill_midway():
        r = runner(s, store)
        r.on_intent_done = lambda outcome: finished.append(outcome.intent_id)
        task = asyncio.create_task(r.run())
        while len(finished) < 3:
            await asyncio.sleep(0.001)
        task.cancel()  # the runner dies with intents in flight
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(kill_midway())
    committed = store.done_intents()
    assert 3 <= len(committed) < 8
    assert store.read_status().state == CampaignState.cancelled
    status = asyncio.run(runner(s, store).run())
    assert status.intents_skipped == len(committed) and status.intents_done == 8
    results = read_results(tmp_path / "results.jsonl")
    assert sorted(r.intent_id for r in results) == sorted(f"i{k}" for k in range(8))
    lineage = read_lineage(tmp_path / "lineage.jsonl")
    ids = [(c.mode, c.id) for c in lineage]
    assert len(ids) == len(set(ids)) == sum(r.images for r in results)


def test_resuming_a_different_campaign_under_the_same_name_is_refused(tmp_path):
    store = CampaignStore(str(tmp_path))
    asyncio.run(runner(spec(2, name="demo"), store).run())
    other = CampaignSpec(name="demo", intents=[Intent(id="x", text="a blue car")], search=SEARCH)
    with pytest.raises(CampaignConflict, match="already exists in the store with a different setup.*intents"):
        asyncio.run(runner(other, store).run())


def test_resuming_under_other_models_is_refused_naming_both(tmp_path):
    store = CampaignStore(str(tmp_path))
    asyncio.run(runner(spec(2, name="demo"), store).run())
    manifest_before = (tmp_path / "manifest.json").read_bytes()
    flux = MODELS.model_copy(update={"diffusion": "black-forest-labs/FLUX.1-schnell", "diffusion_dtype": "bfloat16"})
    with pytest.raises(CampaignConflict) as exc:
        runner(spec(2, name="demo"), store, models=flux).prepare_store()
    assert "'fake-sd'" in str(exc.value) and "'black-forest-labs/FLUX.1-schnell'" in str(exc.value)
    assert (tmp_path / "manifest.json").read_bytes() == manifest_before  # nothing written on refusal
    # the preset's shape-affecting defaults count too: same models, another image size
    with pytest.raises(CampaignConflict, match="width stored 64 requested 512"):
        runner(spec(2, name="demo"), store, defaults=RenderDefaults(width=512, height=64, steps=4,
                                                                    guidance_scale=0.0)).prepare_store()
    runner(spec(2, name="demo"), store).prepare_store()  # the same setup resumes


def test_a_preset_without_an_llm_runs_with_its_own_agents(tmp_path):
    """Presets may name other rewriter/critic implementations (import paths) and no LLM at all."""
    preset_file = tmp_path / "nollm.yaml"
    preset_file.write_text("diffusion: {model: fake}\ndefaults: {width: 64, height: 64, steps: 2, guidance_scale: 0}\n"
                           "rewriter: tests.fake_engines:scripted_rewriter\ncritic: tests.fake_engines:scripted_critic\n")
    preset = load_preset(str(preset_file))
    assert preset.llm is None and not preset.needs_llm
    models = ModelsRecord.of(preset)
    s = spec(3)
    status = asyncio.run(CampaignRunner(s, s.search_config(preset.defaults), FakeRenderer(), None,
                                        CampaignStore(str(tmp_path / "c")), models=models).run())
    assert status.intents_done == 3 and status.search_costs.llm_calls > 0
    with pytest.raises(ValueError, match="kind 'llm' needs a language model"):
        CampaignRunner(s, s.search_config(), FakeRenderer(), None, CampaignStore(str(tmp_path / "d")), models=MODELS)


def test_infrastructure_failures_are_not_committed_and_retried_on_resume(tmp_path):
    store = CampaignStore(str(tmp_path))
    broken = FakeRenderer()
    broken.fail_with = ConnectionError("renderer down")
    status = asyncio.run(runner(spec(3), store, broken).run())
    assert status.state == CampaignState.failed and status.intents_failed == 3
    assert "renderer down" in status.errors[0] and store.done_intents() == set()
    status = asyncio.run(runner(spec(3), store).run())
    assert status.state == CampaignState.done and status.intents_done == 3 and status.intents_failed == 0


def test_rejected_intents_are_recorded(tmp_path):
    s = CampaignSpec(intents=[Intent(id="ok", text="a cat"), Intent(id="bad", text="explicit nude 12 year old")],
                     search=SEARCH)
    status = asyncio.run(runner(s, CampaignStore(str(tmp_path))).run())
    results = {r.intent_id: r for r in read_results(tmp_path / "results.jsonl")}
    assert status.intents_rejected == 1 and results["bad"].status == "rejected"
    assert "moderation" in results["bad"].error and results["bad"].search is None


def test_baseline_policy_none_and_a_deterministic_sample(tmp_path):
    none = asyncio.run(runner(spec(4, baseline="none"), CampaignStore(str(tmp_path / "none"))).run())
    assert none.baseline_costs.images == 0 and none.improvement.n == 0
    assert all(r.baseline is None and r.improvement is None for r in read_results(tmp_path / "none" / "results.jsonl"))

    s = spec(40, baseline="sample:0.5")
    chosen = {i.id for i in s.intents if s.runs_baseline(i.id, SearchConfig())}
    assert 10 < len(chosen) < 30  # about half
    status = asyncio.run(runner(s, CampaignStore(str(tmp_path / "sample"))).run())
    results = read_results(tmp_path / "sample" / "results.jsonl")
    assert {r.intent_id for r in results if r.baseline is not None} == chosen
    assert status.improvement.n == len(chosen)
    assert {i for i in chosen if s.runs_baseline(i, SearchConfig())} == chosen  # stable: same answer every time


def test_negative_prompt_without_guidance_is_refused_with_the_values():
    s = CampaignSpec(intents=[Intent(id="n", text="a cat", negative_prompt="blurry")], search=SEARCH)
    with pytest.raises(ValueError, match=r"guidance_scale is 0.0 \(<= 1 disables"):
        s.search_config(load_preset("tiny").defaults)
    assert s.model_copy(update={"search": s.search.model_copy(update={"guidance_scale": 5.0})}).search_config()


def test_concurrency_fills_the_renderer():
    search = SearchConfig(**SEARCH)  # rounds of 3 and 4 images
    assert intent_concurrency(search, RendererCapacity(max_batch_size=16, replicas=1)) == 8  # 2 x 16 / 4
    assert intent_concurrency(search, RendererCapacity(max_batch_size=16, replicas=4)) == 32
    assert intent_concurrency(search, RendererCapacity(max_batch_size=1, replicas=1)) == 1


def test_campaign_interval_covers_the_true_mean_on_a_synthetic_campaign():
    rng = np.random.default_rng(0)
    covered = 0
    for trial in range(40):
        tally = CampaignTally(200, n_boot=500)
        for k in range(200):
            search_best, base_best = rng.uniform(0.3, 0.7), 0.0
            delta = rng.normal(0.05, 0.1)
            arm = ArmResult(mode="beam", best_id="x", best_prompt="p", best_seed=0, best_image=None,
                            best_score=search_best, rounds=1, stop_reason="rounds", best_score_per_round=[],
                            counts=CallCounts(images=4))
            base = arm.model_copy(update={"mode": "best_of_n", "best_score": base_best})
            tally.fold(IntentOutcome(intent_id=f"i{k}", intent="t", status="done", search=arm, baseline=base,
                                     improvement=delta))
        s = tally.summary().improvement
        covered += s.ci_low <= 0.05 <= s.ci_high
    assert covered >= 34  # ~95% of 40


def test_bad_specs_are_rejected_with_the_reason():
    cases = [
        ({"intents": []}, "at least one intent"),
        ({}, "exactly one of"),
        ({"intents_jsonl": '{"id": "a", "text": "x"}\n{"id": "b"}'}, "line 2"),
        ({"intents": [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]}, "repeated: \\['a'\\]"),
        ({"intents": [{"id": "a", "text": "x"}], "search": {"beam": 3}}, "search.beam"),
        ({"intents": [{"id": "a", "text": "x"}], "search": {"rounds": 0}}, "search.rounds"),
        ({"intents": [{"id": "a b", "text": "x"}]}, "pattern"),
        ({"intents": [{"id": "a", "text": "x"}], "name": ".."}, "name"),
        ({"intents": [{"id": "a", "text": "x"}], "baseline": "sample:2"}, "baseline"),
    ]
    for body, message in cases:
        with pytest.raises(ValidationError, match=message):
            CampaignSpec.model_validate(body)


def test_store_reads_never_create_anything(tmp_path):
    where = tmp_path / "nowhere" / "campaign"
    store = CampaignStore(str(where))
    assert store.read_manifest() is None and store.read_status() is None and store.done_intents() == set()
    assert list(store.iter_parts(["a"])) == [] and store.read_part("a") is None
    with pytest.raises(FileNotFoundError):
        store.read_image("x.png")
    assert not (tmp_path / "nowhere").exists()


def test_a_store_in_another_layout_is_refused_with_a_clear_message(tmp_path):
    (tmp_path / "manifest.json").write_text('{"id": "old", "fingerprint": "abc", "intents": 1}')
    with pytest.raises(StoreFormatError, match="store format 1; this version reads format 2"):
        runner(spec(1), CampaignStore(str(tmp_path))).prepare_store()


def test_no_campaign_record_is_read_by_key_outside_the_record_modules():
    """Records are read through their models, never by string key, in the campaign layer and its tests."""
    from pipelines import records, wire

    keys = set()
    for model in (records.IntentOutcome, records.ArmResult, records.LineageRecord, records.Manifest,
                  wire.CampaignStatus, records.IntentPart, wire.CampaignAccepted):
        keys |= set(model.model_fields)
    pattern = re.compile(r"""\[\s*["'](%s)["']\s*\]""" % "|".join(sorted(keys)))
    offenders = []
    paths = [*(ROOT / "pipelines").glob("*.py"), ROOT / "serving" / "clients.py", ROOT / "serving" / "deployments.py",
             ROOT / "benchmarks" / "bench_serving.py", *(ROOT / "tests").glob("test_serve*.py"),
             ROOT / "tests" / "test_report.py", ROOT / "tests" / "http_helpers.py", Path(__file__)]
    for path in paths:
        if path.name in ("records.py", "wire.py", "tally.py"):  # where the records are defined and folded
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


KILL_CHILD = r"""
import asyncio, sys
from pipelines.campaign import CampaignRunner
from pipelines.records import CampaignSpec
from pipelines.store import CampaignStore, StoreFormatError
from pipelines.testing.fakes import FakeRenderer, ScriptedLLM

class SlowRenderer(FakeRenderer):
    async def render(self, requests):
        await asyncio.sleep(0.3)
        return await super().render(requests)

spec = CampaignSpec.model_validate_json(sys.argv[1])
renderer = SlowRenderer()
asyncio.run(CampaignRunner(spec, spec.search_config(), renderer, ScriptedLLM(renderer), CampaignStore(sys.argv[2])).run())
"""


def test_resume_after_the_runner_process_is_killed(tmp_path):
    """SIGKILL the process running a campaign mid-way (no cleanup runs), then resume: every intent exactly once."""
    import os
    import signal
    import subprocess
    import sys
    import time

    s = spec(10)
    proc = subprocess.Popen([sys.executable, "-c", KILL_CHILD, s.model_dump_json(), str(tmp_path)], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    store = CampaignStore(str(tmp_path))
    deadline = time.time() + 120
    while len(store.done_intents()) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    committed = store.done_intents()
    assert 3 <= len(committed) < 10, committed
    assert not (tmp_path / "results.jsonl").exists() and store.read_status() is None  # killed: only parts exist
    status = asyncio.run(CampaignRunner(s, s.search_config(), FakeRenderer(), ScriptedLLM(), store).run())
    assert status.intents_skipped == len(committed) and status.intents_done == 10
    results = read_results(tmp_path / "results.jsonl")
    assert [r.intent_id for r in results] == [f"i{k}" for k in range(10)]
    lineage = read_lineage(tmp_path / "lineage.jsonl")
    keys = [(c.mode, c.id) for c in lineage]
    assert len(keys) == len(set(keys)) == sum(r.images for r in results)
    assert store.read_status().intents_done == 10


def test_status_manifest_and_report_name_the_rewriter_and_what_it_knows(tmp_path):
    """A user reading a campaign's results must see which rewriter made them and what it read (an oracle says so)."""
    from pipelines.report import write_report

    s = spec(2, rewriter={"mode": "edit"})
    store = CampaignStore(str(tmp_path))
    run = runner(s, store)
    status = asyncio.run(run.run())
    knows = run.rewriter.knows
    assert "language model" in knows and "every other word is kept by rule" in knows  # edit mode says so
    assert status.rewriter_knows == knows == store.read_manifest().rewriter_knows
    assert store.read_status().rewriter_knows == knows
    html = Path(write_report(store)).read_text()
    assert f"rewriter: {knows}".replace("'", "&#39;") in html
    oracle_models = MODELS.model_copy(update={"rewriter": "pipelines.world.rewriter:oracle_rewriter"})
    oracle = CampaignRunner(s, s.search_config(), FakeRenderer(), ScriptedLLM(), CampaignStore(str(tmp_path / "o")),
                            models=oracle_models)
    assert oracle.rewriter_knows.startswith("ORACLE")


def test_the_status_says_done_only_once_results_and_lineage_hold_every_intent(tmp_path):
    """The run's end compiles results.jsonl and lineage.jsonl off the event loop; while it does, the status the API
    reports still says running (a client that sees done and reads the results must find every intent, never the
    previous run's files)."""
    s = spec(4)
    store = CampaignStore(str(tmp_path / "c"))
    compile_slowly = store.compile

    def slow_compile(order):
        time.sleep(0.5)
        return compile_slowly(order)

    store.compile = slow_compile
    r = runner(s, store)
    seen: list[tuple[str, int]] = []

    async def watch(task):
        while not task.done():
            st = r.status
            lines = (tmp_path / "c" / "results.jsonl").read_text().splitlines() \
                if (tmp_path / "c" / "results.jsonl").exists() else []
            seen.append((st.state.value, len(lines)))
            await asyncio.sleep(0.02)

    async def scenario():
        task = asyncio.create_task(r.run())
        await asyncio.gather(task, watch(task))
        return task.result()

    final = asyncio.run(scenario())
    assert final.state == "done" and store.read_status().state == "done"
    assert any(state == "running" and n == 0 for state, n in seen)  # compiling: still running
    assert all(n == 4 for state, n in seen if state == "done")
