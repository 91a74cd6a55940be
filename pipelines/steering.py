"""The campaign's side of a human in the loop (``agents.steering`` is the planner's): people's actions stored in the
campaign's store, read by the planner through :class:`StoreSteering`, checked on arrival by :func:`check_action`, and
the review listing made from the checkpoints of waiting intents (:func:`waiting_intent`).

An action is stored whole or absent at ``actions/<intent>/<id>.json`` when the API accepts it, before the planner sees
it, so it survives a restart of the ingress and a resume of the campaign; the planner records in its checkpoint which
ones it applied, so each takes effect once.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from agents.messages import MAX_PROMPT_CHARS, ActionRequest, CandidateStatus, HumanAction, SearchCheckpoint
from agents.planner import BeamSearchPlanner
from agents.rewriter import clean_prompt
from agents.safety import KeywordModerator, OutputFilter
from agents.steering import ReviewConfig
from pipelines.store import CampaignStore
from pipelines.wire import ReviewBranch, WaitingIntent


class StoreSteering:
    """The planner's :class:`agents.steering.Steering` port over a campaign's store."""

    def __init__(self, store: CampaignStore, review: ReviewConfig | None, clock: Callable[[], float] = time.time):
        self.store = store
        self.review = review
        self.clock = clock

    async def actions(self, intent_id: str, round: int) -> list[HumanAction]:
        return await self.store.call(self.store.read_actions, intent_id)

    def now(self) -> float:
        return self.clock()


class ActionRefused(ValueError):
    """An action the API refuses: ``status`` (404, 409 or 422), the field at fault (None: the whole action)."""

    def __init__(self, status: int, message: str, field: str | None = None):
        super().__init__(message)
        self.status = status
        self.field = field


OUTPUT_FILTER = OutputFilter(KeywordModerator())
"""What a person's prompt must pass, as every rewrite must (it is untrusted input that reaches the renderer)."""


def check_action(request: ActionRequest, intent_ids: list[str], finished: bool,
                 checkpoint: SearchCheckpoint | None) -> None:
    """Raise :class:`ActionRefused` for an action that cannot take effect: an intent the campaign does not have (404),
    an intent already finished (409), a pin or veto naming no branch of the intent (422 ``target``), a prompt the
    output filter refuses or that is empty once cleaned (422 ``prompt``)."""
    if request.intent_id not in intent_ids:
        raise ActionRefused(404, f"the campaign has no intent {request.intent_id!r}", "intent_id")
    if finished:
        raise ActionRefused(409, f"intent {request.intent_id!r} is finished; actions apply to intents still running "
                                 "or waiting for review")
    if request.kind == "add_prompt":
        text = clean_prompt(request.prompt or "")
        if not text or len(text) > MAX_PROMPT_CHARS:
            raise ActionRefused(422, "`prompt` is empty once control characters and extra spaces are removed", "prompt")
        if reason := OUTPUT_FILTER.check(text):
            raise ActionRefused(422, f"`prompt` was refused by the output filter: {reason}", "prompt")
    if request.kind in ("pin", "veto"):
        candidates = checkpoint.search.candidates if checkpoint is not None else []
        if not any(request.target in (c.id, c.prompt) for c in candidates):
            raise ActionRefused(422, f"`target` names no branch of intent {request.intent_id!r} (give a prompt or a "
                                     "candidate id from its review listing or lineage)", "target")


def waiting_intent(checkpoint: SearchCheckpoint, review: ReviewConfig | None) -> WaitingIntent:
    """The review listing's entry for an intent waiting for review (its checkpoint's ``review`` is set)."""
    search = checkpoint.search.candidates
    scores = BeamSearchPlanner._branch_scores(checkpoint)
    kept = [c for c in search if c.score is not None and c.status is CandidateStatus.scored]
    best = max(kept, key=lambda c: c.score) if kept else None
    branches = []
    for prompt in dict.fromkeys(c.prompt for c in search):
        mine = [c for c in search if c.prompt == prompt]
        scored = [c for c in mine if c.score is not None]
        top = max(scored, key=lambda c: c.score) if scored else None
        branches.append(ReviewBranch(
            prompt=prompt, score=scores.get(prompt), seeds=len(scored), candidate_ids=[c.id for c in mine],
            best_image=top.image if top else None, in_beam=prompt in checkpoint.beam,
            pinned=prompt in checkpoint.pinned, vetoed=prompt in checkpoint.vetoed, source=mine[0].source,
        ))
    branches.sort(key=lambda b: (b.score is None, -(b.score or 0.0)))
    since = checkpoint.review.since
    return WaitingIntent(
        intent_id=checkpoint.intent.id, intent=checkpoint.intent.text, best_score=best.score if best else None,
        best_id=best.id if best else None, best_image=best.image if best else None, waiting_since=since,
        timeout_at=since + (review.timeout_s if review is not None else 0.0), rounds=checkpoint.rounds_done,
        branches=branches,
    )
