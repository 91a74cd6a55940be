"""Output safety wired end to end: the real tiny diffusion engine runs the NSFW classifier (open_nsfw on onnxruntime)
and stamps provenance in its encoder threads; with an operator threshold set from a measured score, the image that
scored it is withheld, its candidate is withheld and kept out of the beam, and the campaign status counts it."""

from __future__ import annotations

import asyncio

import pytest

from agents.messages import CandidateStatus, Intent, RenderRequest
from pipelines.campaign import CampaignRunner
from pipelines.records import CampaignSpec
from pipelines.store import CampaignStore
from pipelines.testing.fakes import ScriptedLLM
from pipelines.wire import CampaignState
from serving.clients import LocalRenderer
from serving.engines import DiffusionEngine
from serving.safety import ImageSafetyConfig, OutputSafetyConfig, verify

pytestmark = [pytest.mark.engines, pytest.mark.slow]

SEARCH = {"beam_width": 2, "candidates_per_beam": 2, "rounds": 2, "seeds_per_prompt": 1, "max_images": 12}


class ScoreRecorder(LocalRenderer):
    """The local renderer, remembering each image's NSFW score by request id."""

    def __init__(self, engine):
        super().__init__(engine)
        self.scores: dict[str, float] = {}

    async def render(self, requests):
        results = await super().render(requests)
        self.scores.update({r.request_id: r.nsfw_score for r in results})
        return results


def engine_with(tiny_profile, threshold: float) -> DiffusionEngine:
    safety = OutputSafetyConfig(image_check=ImageSafetyConfig(threshold=threshold, intra_op_threads=1))
    return DiffusionEngine(tiny_profile.diffusion.model_copy(update={"output_safety": safety}))


def run_campaign(engine, store_dir) -> tuple[CampaignRunner, ScoreRecorder]:
    spec = CampaignSpec(name="safe", intents=[Intent(id="a", text="a red apple on a table")], search=SEARCH,
                        baseline="none")
    renderer = ScoreRecorder(engine)
    llm = ScriptedLLM(score_fn=lambda prompt, seed: (len(prompt) % 7, 5, True))
    runner = CampaignRunner(spec, spec.search_config(), renderer, llm, CampaignStore(str(store_dir)), concurrency=1)
    asyncio.run(runner.run())
    return runner, renderer


def test_rendered_images_are_checked_and_stamped(tiny_profile, tmp_path):
    engine = engine_with(tiny_profile, threshold=1.0)
    (result,) = engine.render([RenderRequest(request_id="c:a/r0/p0/s0", prompt="a red apple", seed=3, steps=2,
                                             campaign="c", intent="a")])
    assert result.withheld_reason is None and 0.0 <= result.nsfw_score < 1.0
    report = verify(result.png)
    assert report.record.campaign == "c" and report.record.intent == "a" and report.record.seed == 3
    assert report.watermark.present and report.watermark_matches_record


def test_an_operator_threshold_withholds_the_image_that_reaches_it(tiny_profile, tmp_path):
    # 1. Measure: nothing is flagged at threshold 1.0; every image has a score.
    first, recorder = run_campaign(engine_with(tiny_profile, threshold=1.0), tmp_path / "measure")
    assert first.status.state == CampaignState.done and first.status.images_withheld == 0
    scores = dict(recorder.scores)  # request id = candidate id (the campaign travels in RenderRequest.campaign)
    top_id, top = max(scores.items(), key=lambda kv: kv[1])
    assert len(scores) >= 4 and sum(1 for s in scores.values() if s >= top) < len(scores)

    # 2. The operator sets the threshold to that score: the same (deterministic) run withholds exactly those images.
    second, _ = run_campaign(engine_with(tiny_profile, threshold=top), tmp_path / "withhold")
    store = CampaignStore(str(tmp_path / "withhold"))
    lineage = {c.id: c for c in store.iter_lineage()}
    flagged = {cid for cid, s in scores.items() if s >= top}
    assert second.status.state == CampaignState.done
    assert second.status.images_withheld == len(flagged) == second.status.search_costs.images_withheld
    for cid in flagged:
        candidate = lineage[cid]
        assert candidate.status == CandidateStatus.withheld and "NSFW score" in candidate.error
        assert candidate.image is None and candidate.score is None
        assert not (tmp_path / "withhold" / "images" / CampaignStore.image_name(cid)).exists()
    (outcome,) = store.iter_outcomes(["a"])
    assert outcome.search.best_image is not None and top_id not in outcome.search.best_image
