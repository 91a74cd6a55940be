"""A `world` campaign through the real Serve app over HTTP: the shipped world model on the diffusion deployment, the
judge as critic, the oracle rewriter (the preset's labelled upper bound), no LLM; then its report in headless Chromium
shows scenes, not noise."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from agents.config import SearchConfig
from agents.messages import Intent
from pipelines.records import LineageRecord
from pipelines.report import write_report
from pipelines.store import CampaignStore
from pipelines.wire import CampaignAccepted
from pipelines.world.critic import PASS_SCORE, JudgeCritic
from pipelines.world.decompose import parse_intent, questions
from pipelines.world.scenes import BACKGROUND, PALETTE, TAGS
from tests.http_helpers import outcomes, wait_done
from tests.test_report import headless

pytestmark = [pytest.mark.serve, pytest.mark.engines, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
SEARCH = {"beam_width": 2, "candidates_per_beam": 3, "rounds": 3, "seeds_per_prompt": 1, "max_images": 8}


def world_intents() -> list[dict]:
    """One intent per kind from examples/world.jsonl (held-out wordings, text only; the kind is what the world's
    decomposer reads)."""
    rows = [json.loads(line) for line in (ROOT / "examples" / "world.jsonl").read_text().splitlines()]
    return [next(r for r in rows if parse_intent(r["text"]).spec.tag == tag) for tag in TAGS]


@pytest.fixture(scope="module")
def world_campaign(ray_cluster, tmp_path_factory):
    """The app with preset `world` at /world (its diffusion replica asks for no CPU so it fits beside the tiny app
    in the session's 2-CPU Ray), one 6-intent campaign run to the end over HTTP."""
    from ray import serve

    from pipelines.app import AppConfig, compose_app

    store = tmp_path_factory.mktemp("world-store")
    config = AppConfig(preset="world", store_root=str(store))
    deployments = {"diffusion": {"ray_actor_options": {"num_cpus": 0},
                                 "user_config": {"max_batch_size": 16, "batch_wait_timeout_s": 0.1}}}
    serve.run(compose_app(config, deployments), name="world", route_prefix="/world")
    url = ray_cluster["url"] + "/world"
    with httpx.Client(base_url=url, timeout=60) as client:
        resp = client.post("/v1/campaigns", json={"name": "world-demo", "intents": world_intents(), "search": SEARCH})
        assert resp.status_code == 202, resp.text
        cid = CampaignAccepted.model_validate_json(resp.content).id
        status = wait_done(client, cid, timeout=900)
        results = outcomes(client.get(f"/v1/campaigns/{cid}/results"))
    yield {"status": status, "results": results, "dir": store / cid}
    serve.delete("world")


def test_world_campaign_results_carry_judge_scores_failed_checks_and_a_paired_improvement(world_campaign):
    status, results, campaign_dir = world_campaign["status"], world_campaign["results"], world_campaign["dir"]
    assert status.state == "done" and status.intents_done == len(TAGS), status
    # no language model anywhere: the judge critiques, the rules rewrite
    assert status.search_costs.llm_calls == status.baseline_costs.llm_calls == 0 and status.search_costs.images > 0
    assert status.improvement.n == len(TAGS)
    lineage = [LineageRecord.model_validate_json(x) for x in (campaign_dir / "lineage.jsonl").read_text().splitlines()]
    intents = {r["id"]: Intent.model_validate(r) for r in world_intents()}
    critic = JudgeCritic()
    for o in results:
        assert o.checks == questions(parse_intent(intents[o.intent_id].text))  # in the intent's own words
        assert o.improvement == pytest.approx(o.search.best_score - o.baseline.best_score)
        assert o.search.counts.images <= SearchConfig(**SEARCH).planned_images()
        records = [c for c in lineage if c.intent_id == o.intent_id]
        assert {c.mode for c in records} == {"beam", "best_of_n"}
        # every score is the judge's: re-judging the stored image gives the same critique
        for c in records[:4]:
            again = critic.judge((campaign_dir / c.image).read_bytes(), intents[o.intent_id], _checks(o.checks))
            assert again.score == pytest.approx(c.score) and again.answers == c.critique.answers
            assert c.critique.alignment in (0.0, 1.0)
    failed = [c for c in lineage if c.critique and not all(a.answer for a in c.critique.answers)]
    assert failed and all(c.critique.feedback and c.score < PASS_SCORE for c in failed)  # failed checks, said why
    assert any(c.critique and c.score >= PASS_SCORE for c in lineage)  # and some images pass every check
    assert any(c.source == "rewrite" for c in lineage)  # the rewriter proposed prompts
    # the search is not best-of-N: on these fixed seeds it solves an intent that best-of-N at equal budget does not
    # (were the search replaced by sampling the intent's words, both arms would draw the same images)
    assert any(o.search.best_score >= PASS_SCORE > o.baseline.best_score for o in results), \
        [(o.intent_id, o.search.best_score, o.baseline.best_score) for o in results]


def _checks(questions: list[str]):
    from agents.messages import Check

    return [Check(id=f"q{i + 1}", question=q) for i, q in enumerate(questions)]


def test_world_report_shows_scenes_in_headless_chromium(world_campaign, tmp_path):
    """The best and baseline images are the world's scenes: in the screenshot, the images' pixels are mostly the
    world's dark background and palette colours (random-weight noise is neither)."""
    store = CampaignStore(str(world_campaign["dir"]))
    path = write_report(store)
    page = Path(path).read_text()
    results = world_campaign["results"]
    # a chain of prompts for every intent whose best image came from a rewrite, failed checks under failing images
    assert page.count("how the best prompt was found") == sum(o.search.best_prompt != o.intent for o in results)
    failing = sum((o.search.best_score < PASS_SCORE) + (o.baseline.best_score < PASS_SCORE) for o in results)
    assert page.count('<span class="neg">failed: ') >= failing
    assert page.count("all checks pass") >= 2 * len(results) - failing
    assert "improvement over the best-of-N baseline at equal budget: mean" in page and "95% CI" in page
    shot = tmp_path / "report.png"
    headless(tmp_path, "--window-size=1200,2400", f"--screenshot={shot}", f"file://{path}")
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(float)
    palette = np.array(list(PALETTE.values()), dtype=float)
    near_bg = np.linalg.norm(pixels - np.array(BACKGROUND), axis=2) < 30
    near_palette = np.linalg.norm(pixels[:, :, None, :] - palette, axis=3).min(axis=2) < 60
    # the scenes on screen: large regions where the world's dark background dominates (text never fills 48x48 px)
    regions, n = ndimage.label(ndimage.uniform_filter(near_bg.astype(float), size=48) > 0.6)
    boxes = [b for b in ndimage.find_objects(regions) if (b[0].stop - b[0].start) * (b[1].stop - b[1].start) > 150**2
             and b[0].stop < pixels.shape[0] - 48]  # an image cut off by the window's bottom edge may show no object
    assert len(boxes) >= 2, f"{n} dark regions, {len(boxes)} image-sized"  # the best image beside the baseline's
    for b in boxes:
        scene = (near_bg | near_palette)[b]
        assert scene.mean() > 0.85, scene.mean()  # background and palette colours, not noise
        assert near_palette[b].mean() > 0.01  # with objects drawn on it
