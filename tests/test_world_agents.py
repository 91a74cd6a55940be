"""The world's agents: the judge-backed critic and the oracle rewriter (fast tier: drawn scenes, no model), and the
world preset. That nothing the critic says leaks the world's vocabulary is tests/test_world_honest.py. The campaign through Serve is tests/test_world_campaign.py."""

from __future__ import annotations

import asyncio
import io
import random
from collections import Counter

import pytest
from PIL import Image

from agents.config import CriticConfig
from agents.critic import build_critique
from agents.messages import BranchStep, Intent, IntentChecks, ObjectSpec, RelationSpec, RewriteContext
from agents.ports import CriticError, ImageCritic, PromptRewriter
from pipelines.world.critic import PASS_SCORE, JudgeCritic, spec_from_checks
from pipelines.world.eval import load_heldout
from pipelines.world.judge import spec_to_checks, spec_to_intent
from pipelines.world.rewriter import OracleRewriter
from pipelines.world.scenes import SceneSpec, draw_specs, make_spec


def png(array, prompt: str | None = None) -> bytes:
    """PNG bytes; with ``prompt``, tagged as FakeRenderer tags its images (what
    :class:`pipelines.testing.fakes.ScriptedLLM` reads)."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    if prompt is not None:
        info.add_text("prompt", prompt)
        info.add_text("seed", "0")
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def critique(critic: JudgeCritic, image: bytes, intent: Intent):
    checks, chat = asyncio.run(critic.decompose(intent, request_id="r", seed=0))
    assert chat is None  # no LLM call
    result, chat = asyncio.run(critic.critique(image, intent, checks, request_id="r", seed=0))
    assert chat is None
    return checks, result


# ---------------------------------------------------------------------------------------------------------------------
# Critic
# ---------------------------------------------------------------------------------------------------------------------


def test_the_agents_implement_the_planner_ports():
    assert isinstance(JudgeCritic(), ImageCritic) and isinstance(OracleRewriter(), PromptRewriter)


def test_spec_from_checks_inverts_spec_to_checks_on_every_heldout_intent():
    for row in load_heldout():
        spec = SceneSpec.model_validate(row["spec"])
        back = spec_from_checks(spec_to_checks(spec), row["tag"])
        assert back.include == spec.include and back.exclude == spec.exclude and back.tag == spec.tag, row


def test_a_relation_whose_subject_comes_first_points_back_with_the_inverse():
    checks = IntentChecks(objects=[ObjectSpec(name="circle"), ObjectSpec(name="square")],
                          relations=[RelationSpec(subject="circle", relation="left of", object="square")])
    spec = spec_from_checks(checks)
    assert spec.include[1].position == ("right of", 0) and spec.tag == "position"


@pytest.mark.parametrize("tag", ["colors", "counting", "position", "color_attr"])
def test_drawn_scenes_pass_and_score_with_the_shared_formula(tag):
    rng = random.Random(5)
    from pipelines.world.scenes import sample_spec

    specs = [sample_spec(tag, rng) for _ in range(6)]
    images, _ = draw_specs(specs, seed=2)
    critic = JudgeCritic()
    for spec, image in zip(specs, images):
        intent = spec_to_intent(spec, spec.prompt, "i")
        checks, result = critique(critic, png(image), intent)
        assert [a.answer for a in result.answers] == [True] * len(checks)
        expected = build_critique(CriticConfig(), checks, {c.id: True for c in checks}, alignment=1.0, quality=1.0)
        assert result.score == pytest.approx(expected.score) and result.score >= PASS_SCORE
        assert result.scores["checks"] == 1.0 and result.feedback == ""


def test_a_wrong_colour_fails_its_check_and_says_why():
    drawn = make_spec("color_attr", ["circle", "square"], ["red", "blue"])
    asked = make_spec("color_attr", ["circle", "square"], ["red", "green"])  # the square should be green
    images, _ = draw_specs([drawn], seed=1)
    checks, result = critique(JudgeCritic(), png(images[0]), spec_to_intent(asked, asked.prompt, "i"))
    answers = {c.question: a.answer for c, a in zip(checks, result.answers)}
    assert answers == {"Is there a red circle?": True, "Is there a green square?": False}
    assert result.alignment == 0.0 and result.score < PASS_SCORE
    assert result.feedback == "no green square found: the shape is there, but not in the colour the intent names"
    assert result.score == pytest.approx(build_critique(CriticConfig(), checks, {"q1": True, "q2": False},
                                                        alignment=0.0, quality=1.0).score)


def test_an_empty_image_scores_zero_quality_and_fails():
    images, _ = draw_specs([make_spec("single_object", ["cross"], [None])], seed=0)
    blank = images[0].copy()
    blank[:] = blank[0, 0]
    _, result = critique(JudgeCritic(), png(blank), spec_to_intent(make_spec("single_object", ["cross"], [None]),
                                                                    "a cross", "i"))
    assert result.quality == 0.0 and result.score == 0.0


def test_intents_the_world_cannot_judge_are_refused_with_the_reason():
    critic = JudgeCritic()
    images, _ = draw_specs([make_spec("single_object", ["cross"], [None])], seed=0)
    plain = Intent(id="plain", text="a red apple on a table")
    checks, _ = asyncio.run(critic.decompose(plain, request_id="r", seed=0))
    with pytest.raises(CriticError, match="cannot read 'a red apple on a table'"):
        asyncio.run(critic.critique(png(images[0]), plain, checks, request_id="r", seed=0))
    apple = Intent(id="apple", text="an apple", checks=IntentChecks(objects=[ObjectSpec(name="apple")]))
    checks, _ = asyncio.run(critic.decompose(apple, request_id="r", seed=0))
    with pytest.raises(CriticError, match="'apple' is not drawn in the world"):
        asyncio.run(critic.critique(png(images[0]), apple, checks, request_id="r", seed=0))


# ---------------------------------------------------------------------------------------------------------------------
# Oracle rewriter (a labelled upper bound: it knows the world's vocabulary)
# ---------------------------------------------------------------------------------------------------------------------


def position_intent() -> Intent:
    spec = make_spec("position", ["circle", "square"], ["red", "blue"], relation="below")
    return spec_to_intent(spec, "a picture of a box in azure beneath a dot in crimson", "pos")


def honest_questions(intent: Intent) -> list[str]:
    """The checks the world's critic asks (in the intent's words), as the planner hands them to a rewriter."""
    return [c.question for c in JudgeCritic().reading(intent)[0]]


def context(intent: Intent, failed: list[str], prompt: str | None = None, k: int = 3) -> RewriteContext:
    questions = honest_questions(intent)
    prompt = prompt or intent.text
    step = BranchStep(prompt=prompt, round=0, score=0.3, seeds=1,
                      check_pass_rate={q: 0.0 if q in failed else 1.0 for q in questions})
    return RewriteContext(intent=intent, round=1, k=k, ancestry=[step], failed_checks=failed, checks=questions,
                          tried=[prompt])


def test_same_context_and_seed_same_proposals_other_seeds_others():
    rw, ctx = OracleRewriter(), context(position_intent(), [])
    runs = {seed: asyncio.run(rw.propose(ctx, request_id="r", seed=seed, temperature=0.8)).prompts for seed in range(6)}
    assert all(len(p) == 3 and len(set(p)) == 3 and ctx.current_prompt not in p for p in runs.values())
    assert asyncio.run(rw.propose(ctx, request_id="other", seed=3, temperature=0.8)).prompts == runs[3]
    assert len({tuple(p) for p in runs.values()}) > 3


def test_failed_checks_steer_the_choice_of_transformation():
    intent = position_intent()
    questions = honest_questions(intent)
    relation_q = questions[2]
    assert relation_q.startswith("Is the")

    def usage(failed: list[str]) -> Counter:
        counts: Counter = Counter()
        for seed in range(150):
            for _, names in OracleRewriter().proposals(context(intent, failed, k=2), seed, 0.0):
                counts.update(names)
        return counts

    none_failed, relation_failed = usage([]), usage([relation_q])
    share = lambda c: (c["reorder"] + c["restate"]) / sum(c.values())  # noqa: E731
    assert share(relation_failed) > share(none_failed) + 0.1, (none_failed, relation_failed)
    colour_failed = usage([questions[1]])  # "Is there a dot in crimson?"
    assert colour_failed["common_words"] / sum(colour_failed.values()) > \
        none_failed["common_words"] / sum(none_failed.values())


def test_the_failed_object_is_what_gets_replaced_or_emphasised():
    intent = position_intent()
    red_circle_q = honest_questions(intent)[1]  # "Is there a dot in crimson?"
    proposals = [p for seed in range(40) for p, names in OracleRewriter().proposals(context(intent, [red_circle_q]),
                                                                                  seed, 0.0)
                 if names == ["common_words"]]
    assert proposals
    # a single replacement prefers a word a failed check names: crimson -> red, dot -> circle (not the blue square's)
    changed_failed = sum(("crimson" not in p or "dot" not in p) for p in proposals)
    assert changed_failed / len(proposals) > 0.6, proposals


def test_relations_are_said_the_other_way_round():
    intent = position_intent()
    seen = {p for seed in range(40) for p, names in OracleRewriter().proposals(context(intent, []), seed, 0.0)
            if names == ["reorder"]}
    assert "a picture of a dot in crimson on top of a box in azure" in seen


def test_an_intent_without_structure_still_gets_word_level_rewrites():
    intent = Intent(id="x", text="a crimson disk beneath a sapphire box")
    reply = asyncio.run(OracleRewriter().propose(RewriteContext(intent=intent, round=0, k=2), request_id="r", seed=1,
                                               temperature=0.8))
    assert reply.error is None and len(reply.prompts) == 2 and reply.chat is None


def test_the_world_preset_names_the_shipped_model_and_no_llm():
    from pipelines.world.model import WEIGHTS_DIR
    from serving.presets import load_preset

    preset = load_preset("world")
    assert preset.llm is None and not preset.needs_llm
    assert preset.diffusion.model == str(WEIGHTS_DIR.resolve())
    assert preset.rewriter == "pipelines.world.rewriter:oracle_rewriter"
    assert preset.critic == "pipelines.world.critic:judge_critic"


def test_the_judge_as_held_out_scorer_beside_the_vlm_critic():
    """``vlm_critic_with_judge``: the (scripted) VLM critic scores; the judge's verdict is reported as held-out."""
    from pipelines.world.critic import vlm_critic_with_judge
    from pipelines.testing.fakes import ScriptedLLM

    drawn = make_spec("color_attr", ["circle", "square"], ["red", "blue"])
    asked = make_spec("color_attr", ["circle", "square"], ["red", "green"])
    images, _ = draw_specs([drawn], seed=1)
    critic = vlm_critic_with_judge(ScriptedLLM(keep_requests=False), CriticConfig())
    intent = spec_to_intent(asked, asked.prompt, "i")
    checks, result = critique_with(critic, png(images[0], asked.prompt), intent)
    assert result.held_out == {"judge": pytest.approx(0.25)}  # mean of pass 0 and checks 0.5
    assert "judge" not in result.scores
    with pytest.raises(ValueError, match="needs the preset's llm"):
        vlm_critic_with_judge(None, CriticConfig())


def critique_with(critic, image: bytes, intent: Intent):
    checks, _ = asyncio.run(critic.decompose(intent, request_id="r", seed=0))
    result, _ = asyncio.run(critic.critique(image, intent, checks, request_id="r", seed=0))
    return checks, result
