"""Model A/B (pipelines/ab.py): the spec's two variant campaigns, seeds paired between them, the comparison's numbers,
the renderer deployments an app serves; and through the real Serve app, one A/B campaign on two renderer deployments
(`test_ab_campaign_through_the_serve_app_on_two_renderer_deployments`)."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from pydantic import ValidationError

from agents.messages import CallCounts, Intent
from pipelines.ab import compare, read_comparison
from pipelines.campaign import CampaignRunner
from pipelines.records import ABManifest, ArmResult, CampaignSpec, IntentOutcome, LineageRecord, ModelsRecord
from pipelines.server.configs import AppConfig
from pipelines.store import campaign_store
from pipelines.testing.fakes import FakeRenderer, ScriptedLLM
from pipelines.wire import ABComparison, ABIntent, CampaignAccepted, CampaignState

SEARCH = {"beam_width": 2, "candidates_per_beam": 2, "rounds": 2, "seeds_per_prompt": 1, "max_images": 12}
MODELS = ModelsRecord(preset="fake", diffusion="fake-sd", diffusion_dtype="auto", llm="fake-vlm", llm_dtype="auto",
                      rewriter="llm", critic="llm")


def ab_spec(n: int = 3, **kw) -> CampaignSpec:
    kw.setdefault("ab", {"a": {"steps": 4}, "b": {"steps": 2}})
    return CampaignSpec(name="cmp", intents=[Intent(id=f"i{k}", text=f"a red apple number {k}") for k in range(n)],
                        search=SEARCH, **kw)


# -- the spec -----------------------------------------------------------------------------------------------------


def test_an_ab_spec_makes_two_campaigns_that_differ_only_in_the_variant():
    spec = ab_spec()
    children = spec.variants()
    assert {n: c.campaign_id() for n, c in children.items()} == {"a": "cmp.a", "b": "cmp.b"}
    a, b = children["a"], children["b"]
    assert a.search_config().steps == 4 and b.search_config().steps == 2
    assert a.ab is None and b.ab is None
    same = ("intents", "rewriter", "critic", "baseline", "budget_images", "budget_rule")
    assert all(getattr(a, f) == getattr(b, f) == getattr(spec, f) for f in same)
    assert a.search_config().model_dump(exclude={"steps"}) == b.search_config().model_dump(exclude={"steps"})
    on_other = ab_spec(ab={"a": {}, "b": {"renderer": "diffusion_b"}}).variants()
    assert (on_other["a"].renderer, on_other["b"].renderer) == ("diffusion", "diffusion_b")


@pytest.mark.parametrize("ab, reason", [
    ({"a": {"steps": 4}}, "exactly two variants"),
    ({"a": {"steps": 4}, "b": {"steps": 2}, "c": {"steps": 1}}, "exactly two variants"),
    ({"a": {"steps": 4}, "b": {"steps": 4}}, "the same"),
    ({"A": {"steps": 4}, "b": {"steps": 2}}, "variant names"),
    ({"a": {"renderer": "../x"}, "b": {}}, "renderer"),
])
def test_bad_ab_specs_are_refused_with_the_reason(ab, reason):
    with pytest.raises(ValidationError, match=reason):
        ab_spec(ab=ab)


def test_an_ab_spec_refuses_its_own_renderer_and_ids_too_long_for_its_variants():
    with pytest.raises(ValidationError, match="leave the campaign's `renderer` unset"):
        ab_spec(renderer="diffusion_b")
    with pytest.raises(ValidationError, match="would have 102 characters"):
        CampaignSpec(name="x" * 100, intents=[Intent(id="i", text="a cat")], ab={"a": {"steps": 1}, "b": {}})


def test_campaign_ids_without_ab_or_renderer_are_unchanged_and_the_variants_enter_the_id():
    plain = CampaignSpec(intents=[Intent(id="i", text="a cat")])
    assert plain.renderer_identity() == {}  # campaigns stored before A/B existed keep their id (and resume)
    ids = {plain.campaign_id(),
           CampaignSpec(intents=[Intent(id="i", text="a cat")], renderer="diffusion_b").campaign_id(),
           CampaignSpec(intents=[Intent(id="i", text="a cat")], ab={"a": {"steps": 1}, "b": {}}).campaign_id(),
           CampaignSpec(intents=[Intent(id="i", text="a cat")], ab={"a": {"steps": 2}, "b": {}}).campaign_id()}
    assert len(ids) == 4


# -- seeds paired between the variants ----------------------------------------------------------------------------


def test_both_variants_draw_the_same_seeds_for_the_same_candidates(tmp_path):
    spec = ab_spec(4)
    lineage = {}
    for name, child in spec.variants().items():
        renderer = FakeRenderer()
        store = campaign_store(str(tmp_path), child.campaign_id())
        runner = CampaignRunner(child, child.search_config(), renderer, ScriptedLLM(renderer), store, models=MODELS)
        assert asyncio.run(runner.run()).state is CampaignState.done
        lineage[name] = {c.id: c for c in (LineageRecord.model_validate_json(x) for x in
                                           (tmp_path / child.campaign_id() / "lineage.jsonl").read_text().splitlines())}
        assert {r.steps for call in renderer.calls for r in call} == {child.search_config().steps}  # its own setting
    shared = lineage["a"].keys() & lineage["b"].keys()
    round0 = {cid for cid in lineage["a"] if lineage["a"][cid].round == 0}
    assert round0 and round0 <= shared  # every round-0 candidate (and the baselines) exists on both sides
    assert all(lineage["a"][cid].seed == lineage["b"][cid].seed for cid in shared)
    assert {lineage["a"][cid].seed for cid in round0} != {0}


# -- the comparison -----------------------------------------------------------------------------------------------


def outcome(iid: str, best: float | None, images: int = 8, seconds: float = 2.0, baseline: float | None = None,
            status: str = "done") -> IntentOutcome:
    def arm(mode, score):
        return ArmResult(mode=mode, best_id="x", best_prompt="p", best_seed=1, best_image=None, best_score=score,
                         rounds=1, stop_reason="rounds", best_score_per_round=[score],
                         counts=CallCounts(images=images, render_seconds=seconds))

    if status == "rejected":
        return IntentOutcome(intent_id=iid, intent="t", status="rejected", error="moderation")
    return IntentOutcome(intent_id=iid, intent="t", status="done", search=arm("beam", best),
                         baseline=arm("best_of_n", baseline) if baseline is not None else None,
                         improvement=best - baseline if baseline is not None else None)


def test_the_comparison_pairs_intents_and_prices_each_solved_intent():
    manifest = ABManifest.of(ab_spec(), solved_at=0.9, created_at=0.0)
    a = [outcome("i0", 1.0, baseline=0.5), outcome("i1", 0.5, baseline=0.5), outcome("i2", 0.95, baseline=1.0),
         outcome("i3", 0.2), outcome("i4", None, status="rejected")]
    b = [outcome("i0", 0.8, images=4, seconds=0.5), outcome("i1", 0.92, images=4, seconds=0.5),
         outcome("i2", 0.99, images=4, seconds=0.5)]  # i3 not finished yet on b
    c = compare(manifest, {"a": a, "b": b}, 5, {"a": CampaignState.done, "b": CampaignState.running})
    sa, sb = c.variants
    assert (sa.variant, sa.campaign, sa.steps, sb.variant, sb.steps) == ("a", "cmp.a", 4, "b", 2)
    assert (sa.intents_finished, sa.solved, sa.accuracy, sa.images, sa.render_seconds) == (5, 2, 0.5, 32, 8.0)
    assert (sa.images_per_solved, sa.render_seconds_per_solved) == (16.0, 4.0)
    assert sa.accuracy_ci[0] <= 0.5 <= sa.accuracy_ci[1]
    assert (sb.intents_finished, sb.solved, sb.images_per_solved) == (3, 2, 6.0)
    assert sa.improvement.n == 3 and sa.improvement.mean == pytest.approx((0.5 + 0.0 - 0.05) / 3)
    assert c.state is CampaignState.running and c.difference == "b - a"
    d = c.solved_difference  # over i0..i2 only: b - a solved = -1, +1, 0
    assert (d.n, d.wins, d.ties, d.losses) == (3, 1, 1, 1) and d.mean == pytest.approx(0.0)
    assert c.score_difference.mean == pytest.approx((-0.2 + 0.42 + 0.04) / 3)
    done = compare(manifest, {"a": a, "b": b}, 5, {"a": CampaignState.done, "b": CampaignState.done})
    assert done.state is CampaignState.done


def test_the_comparison_reads_both_variants_from_the_store(tmp_path):
    spec = ab_spec(3)
    for child in spec.variants().values():
        renderer = FakeRenderer()
        runner = CampaignRunner(child, child.search_config(), renderer, ScriptedLLM(renderer),
                                campaign_store(str(tmp_path), child.campaign_id()), models=MODELS)
        asyncio.run(runner.run())
    manifest = ABManifest.of(spec, solved_at=0.5, created_at=time.time())
    c = read_comparison(str(tmp_path), manifest, {"a": CampaignState.done, "b": CampaignState.done})
    assert [s.intents_finished for s in c.variants] == [3, 3] and c.solved_difference.n == 3
    assert all(s.images > 0 and s.render_seconds >= 0 for s in c.variants)


# -- the app's renderer deployments -------------------------------------------------------------------------------


def test_an_app_serves_named_renderers_over_the_preset_and_refuses_bad_names(tiny_models):
    config = AppConfig(preset="tiny", tiny_dir=str(tiny_models["diffusion"].parent),
                       diffusion={"max_batch_size": 4}, renderers={"diffusion_b": {"dtype": "float32"}})
    assert config.renderer_names() == ["diffusion", "diffusion_b"]
    other = config.resolve("diffusion_b")
    assert other.diffusion.dtype == "float32" and other.diffusion.max_batch_size == 4  # over the app's overrides
    assert config.resolve().diffusion.model == other.diffusion.model
    for bad in ("llm", "ingress", "Diffusion-B", "x" * 64):
        with pytest.raises(ValidationError, match="renderer name"):
            AppConfig(renderers={bad: {}})


# -- through the Serve app ----------------------------------------------------------------------------------------


@pytest.mark.serve
@pytest.mark.engines
@pytest.mark.slow
def test_ab_campaign_through_the_serve_app_on_two_renderer_deployments(serve_app):
    """One submission renders its intents on the app's two renderer deployments (diffusion at 2 steps, diffusion_b at
    1; diffusion_b writes WebP, so each image shows which deployment made it): both variant campaigns finish, each on
    its own deployment, with the same seeds for the same candidates; the comparison and the per-intent results
    answer; an unknown renderer is 422 naming the field."""
    body = {"name": "ab-serve", "intents": [{"id": f"i{k}", "text": f"a photo of {k + 1} red apples"} for k in range(3)],
            "search": {"beam_width": 1, "candidates_per_beam": 1, "rounds": 2, "max_images": 4, "steps": 2},
            "ab": {"a": {"renderer": "diffusion"}, "b": {"renderer": "diffusion_b", "steps": 1}}}
    with httpx.Client(base_url=serve_app["url"], timeout=60) as client:
        bad = client.post("/v1/campaigns", json={**body, "name": "ab-bad", "ab": {"a": {}, "b": {"renderer": "nope"}}})
        assert bad.status_code == 422 and "ab.b.renderer" in bad.text and "nope" in bad.text
        resp = client.post("/v1/campaigns", json=body)
        assert resp.status_code == 202, resp.text
        accepted = CampaignAccepted.model_validate_json(resp.content)
        assert accepted.variants == {"a": "ab-serve.a", "b": "ab-serve.b"}
        assert client.get("/v1/campaigns/ab-serve").status_code == 404  # the parent points at its /ab
        deadline = time.time() + 600
        while (c := ABComparison.model_validate_json(client.get(accepted.status_url).content)).state == "running":
            assert time.time() < deadline
            time.sleep(1)
        assert c.state == "done" and [s.intents_finished for s in c.variants] == [3, 3], c
        assert c.solved_difference.n == 3 and [s.renderer for s in c.variants] == ["diffusion", "diffusion_b"]
        lines = [ABIntent.model_validate_json(x) for x in client.get(accepted.results_url).text.splitlines()]
        assert [x.intent_id for x in lines] == ["i0", "i1", "i2"] and all(set(x.variants) == {"a", "b"} for x in lines)
    store = serve_app["store"]
    seeds = {}
    for name in ("a", "b"):
        lineage = [LineageRecord.model_validate_json(x)
                   for x in (store / f"ab-serve.{name}" / "lineage.jsonl").read_text().splitlines()]
        seeds[name] = {c.id: c.seed for c in lineage}
        manifest = campaign_store(str(store), f"ab-serve.{name}").read_manifest()
        assert manifest.models.renderer == ("diffusion" if name == "a" else "diffusion_b")
        assert manifest.search.steps == (2 if name == "a" else 1)
        magic = {(store / f"ab-serve.{name}" / c.image).read_bytes()[8:12] if name == "b" else
                 (store / f"ab-serve.{name}" / c.image).read_bytes()[1:4] for c in lineage if c.image}
        assert magic == ({b"WEBP"} if name == "b" else {b"PNG"})  # rendered by diffusion_b / diffusion
    shared = seeds["a"].keys() & seeds["b"].keys()
    assert shared and all(seeds["a"][k] == seeds["b"][k] for k in shared)


def test_the_ab_report_shows_both_variants_side_by_side_and_links_their_reports(tmp_path):
    from typer.testing import CliRunner

    from pipelines.cli import app

    spec = ab_spec(2)
    for child in spec.variants().values():
        renderer = FakeRenderer()
        asyncio.run(CampaignRunner(child, child.search_config(), renderer, ScriptedLLM(renderer),
                                   campaign_store(str(tmp_path), child.campaign_id()), models=MODELS).run())
    campaign_store(str(tmp_path), "cmp").write_ab(ABManifest.of(spec, solved_at=0.5, created_at=time.time()))
    result = CliRunner().invoke(app, ["report", str(tmp_path / "cmp")])
    assert result.exit_code == 0, result.output
    html = (tmp_path / "cmp" / "report.html").read_text()
    assert "model A/B cmp" in html and 'href="../cmp.a/report.html"' in html and 'href="../cmp.b/report.html"' in html
    assert html.count("data:image/png;base64,") == 4  # each intent's best image on each variant, embedded
    assert "paired b - a" in html
    assert (tmp_path / "cmp.a" / "report.html").exists() and (tmp_path / "cmp.b" / "report.html").exists()


def test_the_cli_reads_ab_variants_and_refuses_bad_ones_before_starting_anything(tmp_path):
    from typer.testing import CliRunner

    from pipelines.cli import _with_ab, app

    spec = _with_ab(ab_spec(ab=None), ["a:steps=12", "b:renderer=diffusion_b,steps=4,guidance_scale=2.5"])
    assert spec.ab["a"].steps == 12 and spec.ab["b"].model_dump() == {"renderer": "diffusion_b", "steps": 4,
                                                                      "guidance_scale": 2.5}
    campaign = tmp_path / "c.jsonl"
    campaign.write_text('{"id": "i0", "text": "a red cube"}\n')
    for options, reason in ((["a:steps=4"], "exactly two variants"), (["a:steps=4", "b:steps"], "expected NAME"),
                            (["a:steps=4", "b:steps=4"], "the same")):
        result = CliRunner().invoke(app, ["run", str(campaign), "--out", str(tmp_path / "runs"),
                                          *[x for o in options for x in ("--ab", o)]])
        assert result.exit_code == 2 and reason in result.output, result.output
    assert not (tmp_path / "runs").exists()
