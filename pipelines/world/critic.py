"""A critic whose answers come from the world's judge instead of a VLM (``agents.ports.ImageCritic``).

The judge (:mod:`pipelines.world.judge`) answers each check by detecting the shapes in the image, and the score is the
shared formula (``agents.critic.build_critique``), so planner, campaign runner, store, report and metrics treat it like
any critic. Where the VLM gives two ratings, the judge gives:

- ``alignment`` = 1 when every check passes (the judge's all-pass verdict, GenEval's accuracy), else 0;
- ``quality`` = the share of the image's detected objects that are recognisable shapes (stray blobs and smears lower
  it), 0 for an empty image.

With the default weights (0.5 / 0.35 / 0.15) an image passing every check scores >= 0.85 and any other scores
<= 0.65, so the best-scored image of an arm passes the judge whenever any of its images does (:data:`PASS_SCORE`).

**What it says, and what it keeps.** The checks and the feedback quote the intent's own words
(:mod:`pipelines.world.decompose`); the spec the judge scores against — in the model's training vocabulary — never
leaves it. No LLM call is made (costs are zero).

Where the critic is the VLM, :class:`JudgeScorer` adds the judge as a held-out scorer (reported, never optimised).
"""

from __future__ import annotations

import asyncio

from agents.config import CriticConfig
from agents.critic import build_critique, checks_from_structure
from agents.messages import ChatResult, Check, Critique, Intent, IntentChecks
from agents.ports import CriticError
from pipelines.world.decompose import ParsedIntent, ParseError, feedback, parse_intent, questions
from pipelines.world.grammar import INVERSE
from pipelines.world.judge import detect, evaluate
from pipelines.world.scenes import TAGS, Requirement, SceneSpec

PASS_SCORE = 0.85
"""With CriticConfig's default weights, a critique scores at least this exactly when the judge passes the image."""


def spec_from_checks(checks: IntentChecks | None, tag: str | None = None) -> SceneSpec:
    """The GenEval-style spec behind an intent's structured checks (the inverse of ``pipelines.world.judge.spec_to_checks``).

    An object with a ``count`` asks for exactly that many (an exclude of count + 1 follows, GenEval's counting form),
    as the critic's question "exactly N" says; one without asks for at least one. A relation names its objects as
    "colour class" or "class"; the later of the two entries points back at the earlier (the inverse relation when the
    subject comes first). Raises ``ValueError`` naming what does not fit."""
    if checks is None or not checks.objects:
        raise ValueError("the world critic judges intents with structured checks (objects with class, count, colour); "
                         "this intent has none")
    include = [Requirement(cls=o.name, count=o.count or 1, color=o.color) for o in checks.objects]
    exclude = [Requirement(cls=o.name, count=o.count + 1) for o in checks.objects if o.count is not None]
    names = {(f"{r.color} {r.cls}" if r.color else r.cls): i for i, r in enumerate(include)}
    for rel in checks.relations:
        if rel.subject not in names or rel.object not in names:
            raise ValueError(f"relation {rel.subject!r} {rel.relation!r} {rel.object!r} names an object that is not "
                             f"among the intent's objects {sorted(names)}")
        s, o = names[rel.subject], names[rel.object]
        if s == o:
            raise ValueError(f"relation {rel.subject!r} {rel.relation!r} {rel.object!r} relates an object to itself")
        later, earlier, relation = (s, o, rel.relation) if s > o else (o, s, INVERSE.get(rel.relation, rel.relation))
        if include[later].position is not None:
            raise ValueError(f"object {include[later].cls!r} is in more than one relation; the world judges one each")
        include[later] = include[later].model_copy(update={"position": (relation, earlier)})
    if tag not in TAGS:
        tag = "position" if checks.relations else "counting" if exclude else "custom"
    return SceneSpec(tag=tag, include=include, exclude=exclude, prompt="-")


class JudgeCritic:
    """``ImageCritic`` answered by the world's judge. Stateless; ``decompose`` and ``critique`` make no LLM call.

    An intent is read in one of two ways, and the judge keeps what it read to itself:

    - from its text (the world's benchmark and example intents carry nothing else): :mod:`pipelines.world.decompose`
      parses the wording into the spec, and the checks and feedback quote the intent's own phrases ("Is there a
      crimson wedge?", "no crimson wedge found"), so a rewriter never reads the words the model was trained on;
    - from structured ``checks`` a user wrote (general campaigns): the checks are the user's own names, asked as
      ``agents.critic.checks_from_structure`` asks them.
    """

    def __init__(self, config: CriticConfig | None = None):
        self.config = config or CriticConfig()

    def reading(self, intent: Intent) -> tuple[list[Check], SceneSpec, ParsedIntent | None]:
        """The intent's checks, the spec the judge scores them with, and the parse (None for structured checks).
        Raises ``CriticError`` naming what the world cannot read."""
        if intent.checks and (intent.checks.objects or intent.checks.relations):
            try:
                spec = spec_from_checks(intent.checks, intent.tags[0] if intent.tags else None)
            except ValueError as exc:
                raise CriticError(f"intent {intent.id!r}: {exc}") from exc
            return checks_from_structure(intent.checks, self.config.max_checks), spec, None
        try:
            parsed = parse_intent(intent.text)
        except ParseError as exc:
            raise CriticError(f"intent {intent.id!r}: {exc}") from exc
        qs = questions(parsed)[: self.config.max_checks]
        return [Check(id=f"q{i + 1}", question=q) for i, q in enumerate(qs)], parsed.spec, parsed

    async def decompose(self, intent: Intent, *, request_id: str, seed: int) -> tuple[list[Check], ChatResult | None]:
        """The intent's checks; an intent the world cannot read gets one holistic check, which :meth:`critique`
        then refuses with the reason (recorded on each candidate)."""
        try:
            return self.reading(intent)[0], None
        except CriticError:
            return [Check(id="q1", question="Does the image show everything the intent describes?")], None

    def judge(self, png: bytes, intent: Intent, checks: list[Check]) -> Critique:
        """The critique of one image (synchronous; the judge takes about a millisecond)."""
        expected, spec, parsed = self.reading(intent)
        dets = detect(png)
        verdict = evaluate(spec, dets)
        if not verdict.supported:
            raise CriticError(f"intent {intent.id!r}: {'; '.join(verdict.reasons)}")
        if [c.question for c in checks] != [c.question for c in expected]:
            raise CriticError(f"intent {intent.id!r}: the checks {[c.question for c in checks]} are not the ones the "
                              f"judge answers {[c.question for c in expected]}")
        answers = {c.id: bool(a) for c, a in zip(checks, verdict.answers)}
        quality = sum(d.shape is not None for d in dets) / len(dets) if dets else 0.0
        if parsed is None:
            notes = verdict.reasons  # structured checks: the user's own names
        else:
            counts = [{"n": sum(d.shape == o.shape and (o.color is None or d.color == o.color) for d in dets),
                       "n_shape": sum(d.shape == o.shape for d in dets),
                       "n_color": sum(d.color == o.color for d in dets)} for o in parsed.objects]
            present = [c["n"] >= o.count for c, o in zip(counts, parsed.objects)]
            notes = feedback(parsed, verdict.answers, counts, relation_checkable=all(present))
        return build_critique(self.config, checks, answers, alignment=1.0 if verdict.passed else 0.0,
                              quality=quality, feedback="; ".join(notes))

    async def critique(
        self, png: bytes, intent: Intent, checks: list[Check], *, request_id: str, seed: int
    ) -> tuple[Critique, ChatResult | None]:
        return await asyncio.to_thread(self.judge, png, intent, checks), None


def judge_critic(llm, config: CriticConfig) -> JudgeCritic:
    """Preset factory (``critic: pipelines.world.critic:judge_critic``): needs no language model."""
    return JudgeCritic(config)


class JudgeScorer:
    """``agents.ports.Scorer``: the judge as a held-out scorer beside a VLM critic — ``pass`` (1 when every check
    holds) and ``checks`` (the share that hold) for world intents; reported in ``Critique.held_out``, never optimised."""

    name = "judge"

    def __init__(self, config: CriticConfig | None = None):
        self.critic = JudgeCritic(config)

    async def score(self, png: bytes, intent: Intent) -> dict[str, float]:
        checks, _ = await self.critic.decompose(intent, request_id="judge", seed=0)
        critique, _ = await self.critic.critique(png, intent, checks, request_id="judge", seed=0)
        return {"pass": critique.alignment, "checks": critique.scores["checks"]}


def vlm_critic_with_judge(llm, config: CriticConfig):
    """Preset factory (``critic: pipelines.world.critic:vlm_critic_with_judge``): the VLM critic scores and steers
    the search; the judge's verdict on world intents is reported beside it as the held-out ``judge`` score."""
    from agents.critic import Critic, WeightedScorer

    if llm is None:
        raise ValueError("vlm_critic_with_judge needs the preset's llm (the VLM critic)")
    return Critic(llm, config, scorers=[WeightedScorer(JudgeScorer(config), held_out=True)])
