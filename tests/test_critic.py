"""The critic's aggregation formula, extra scorers with weights, and held-out scorers."""

from __future__ import annotations

import asyncio

import pytest

from agents.config import CriticConfig
from agents.critic import Critic, CriticError, WeightedScorer, critique_schema
from agents.messages import Check, Intent, RenderRequest
from pipelines.testing.fakes import DictSink, FakeRenderer, ScriptedLLM


class ConstScorer:
    def __init__(self, name: str, value: float):
        self.name, self.value = name, value

    async def score(self, png: bytes, intent: Intent) -> dict[str, float]:
        return {"a": self.value, "b": self.value}


CHECKS = [Check(id="q1", question="apple?"), Check(id="q2", question="table?")]


def test_aggregation_formula():
    critic = Critic(llm=None, config=CriticConfig(weight_checks=0.5, weight_alignment=0.3, weight_quality=0.2))
    c = critic.aggregate({"answers": {"q1": True, "q2": False}, "alignment": 8, "quality": 4, "feedback": "no table"},
                         CHECKS, {}, {})
    assert c.scores == {"checks": 0.5, "alignment": 0.8, "quality": 0.4}
    assert c.score == pytest.approx((0.5 * 0.5 + 0.3 * 0.8 + 0.2 * 0.4) / 1.0)
    assert [a.answer for a in c.answers] == [True, False] and c.feedback == "no table"


def test_verdict_missing_an_answer_is_a_model_failure():
    critic = Critic(llm=None)
    with pytest.raises(CriticError, match="does not answer every check"):
        critic.aggregate({"answers": {"q1": True}, "alignment": 5, "quality": 5, "feedback": ""}, CHECKS, {}, {})
    schema = critique_schema(CHECKS)
    assert schema["properties"]["answers"]["required"] == ["q1", "q2"]


def test_extra_scorers_are_weighted_and_held_out_ones_only_reported():
    renderer = FakeRenderer()
    llm = ScriptedLLM(renderer, score_fn=lambda p, s: (10, 10, True))  # the VLM part scores 1.0
    critic = Critic(llm, CriticConfig(weight_checks=1, weight_alignment=1, weight_quality=1),
                    scorers=[WeightedScorer(ConstScorer("clip", 0.0), weight=3.0),
                             WeightedScorer(ConstScorer("aesthetic", 0.2), held_out=True)])
    png = asyncio.run(renderer.render([RenderRequest(request_id="x", prompt="an apple", seed=1)]))[0].png
    critique, _ = asyncio.run(critic.critique(png, Intent(id="i", text="an apple"), CHECKS, request_id="c", seed=0))
    assert critique.scores["clip"] == 0.0
    assert critique.score == pytest.approx((1 + 1 + 1 + 3 * 0.0) / (3 + 3))  # the extra scorer pulls it down
    assert critique.held_out == {"aesthetic": pytest.approx(0.2)}
    assert "aesthetic" not in critique.scores  # reported, never optimised


def test_critic_timeout_is_a_recorded_model_failure():
    """A critic that does not answer in time fails the candidate (status failed, reason recorded); the search goes on."""
    from agents.config import SearchConfig
    from agents.messages import CandidateStatus
    from agents.planner import BeamSearchPlanner
    from agents.rewriter import Rewriter

    renderer = FakeRenderer()
    llm = ScriptedLLM(renderer)

    class SlowCritiques:
        async def chat(self, request):
            if "/critique" in request.request_id and "/r0/p0/" in request.request_id:
                await asyncio.sleep(5)
            return await llm.chat(request)

    slow = SlowCritiques()
    planner = BeamSearchPlanner(renderer, Rewriter(slow), Critic(slow, timeout_s=0.2), SearchConfig(rounds=2),
                                image_sink=DictSink())
    result = asyncio.run(planner.run(Intent(id="t", text="a cat")))
    timed_out = [c for c in result.candidates if c.id.startswith("t/r0/p0/")]
    assert timed_out and all(c.status == CandidateStatus.failed and "timed out" in c.error for c in timed_out)
    assert result.rounds_run == 2 and result.best is not None


def _png(width: int, height: int) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


def test_critique_request_puts_the_shared_prefix_first_and_a_downscaled_image_last():
    import io

    from PIL import Image

    critic = Critic(llm=None, config=CriticConfig(max_pixels=64 * 64))
    intent = Intent(id="i", text="a red apple")
    a = critic.build_critique_request(_png(256, 128), intent, CHECKS, request_id="a", seed=1)
    b = critic.build_critique_request(_png(32, 32), intent, CHECKS, request_id="b", seed=2)
    assert [m.role for m in a.messages] == ["system", "user"]
    parts = a.messages[1].content
    assert [p.type for p in parts] == ["text", "image"]  # the image last
    assert "apple?" in parts[0].text and "a red apple" in parts[0].text
    # everything before the image is identical for two images of one intent: a prefix cache can reuse it
    assert a.messages[0] == b.messages[0] and a.messages[1].content[0] == b.messages[1].content[0]
    w, h = Image.open(io.BytesIO(parts[1].data)).size
    assert w * h <= 64 * 64 and (w, h) == (90, 45)  # aspect kept: sqrt(4096 / 32768) * (256, 128), floored
    assert b.messages[1].content[1].data == _png(32, 32)  # small images pass untouched


def test_a_judge_and_the_vlm_critic_score_the_same_answers_alike():
    from agents.critic import build_critique

    config = CriticConfig()
    vlm = Critic(llm=None, config=config).aggregate(
        {"answers": {"q1": True, "q2": False}, "alignment": 7, "quality": 3, "feedback": "f"}, CHECKS, {}, {})
    judge = build_critique(config, CHECKS, {"q1": True, "q2": False}, alignment=0.7, quality=0.3, feedback="f")
    assert judge == vlm
    with pytest.raises(CriticError, match=r"missing \['q2'\]"):
        build_critique(config, CHECKS, {"q1": True}, alignment=0.5, quality=0.5)
