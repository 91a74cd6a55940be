"""A human in the loop: what the planner asks a person's side of the campaign, and what it tells it.

While a campaign runs, people act on its intents (:class:`agents.messages.HumanAction`, posted through the API and
stored whole in the campaign's store): pin a branch (kept in the beam whatever its rank), veto one (out of the beam,
never expanded, its images never the result's best), add a prompt of their own (rendered in the intent's next round,
``source="human"``), or accept an intent waiting for review. The planner reads them through a :class:`Steering` port at
each round boundary, the way it reads the campaign's image budget through ``allowance``: it applies every action it has
not applied yet, in the order they were posted, and records each in its checkpoint (``SearchCheckpoint.human_actions``),
so a resumed run applies each exactly once and ends as an uninterrupted one would.

**Review.** With a :class:`ReviewConfig` (``CampaignSpec.review``), an intent whose search stopped with its best score
under ``threshold`` does not finish: it waits. The planner writes its checkpoint with a :class:`ReviewState` and raises
:class:`AwaitingReview`; the campaign runner frees the intent's concurrency slot and runs it again (from that
checkpoint) when a person acts on it or its ``timeout_s`` has passed. Then:

- ``accept``: it finishes as it is (``review.ended == "accepted"``);
- pin, veto or add_prompt: it runs one more round with them (``"steered"``), and waits again if its best is still
  under the threshold;
- nobody acted in time: it finishes as it is (``"timed_out"``).

The planner decides all of this from the checkpoint, the actions and the clock (:meth:`Steering.now`), so a waiting
intent survives a restart: a resumed campaign runs it again and it waits, or goes on, from where it was.
"""

from __future__ import annotations

from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from agents.messages import HumanAction


class ReviewConfig(BaseModel):
    """When an intent waits for a person (``CampaignSpec.review``)."""

    model_config = ConfigDict(extra="forbid")

    threshold: float = Field(ge=0.0, le=1.0, description="An intent whose best score is under this waits for review.")
    timeout_s: float = Field(
        default=3600.0, gt=0.0, le=7 * 86400.0,
        description="How long it waits for a person before it finishes as it is (seconds, from when it began waiting).",
    )


class Steering(Protocol):
    """The planner's port to the people's side of a campaign (``pipelines.steering.StoreSteering``: the store)."""

    review: ReviewConfig | None
    """None: intents never wait for review (actions still apply at round boundaries)."""

    async def actions(self, intent_id: str, round: int) -> list[HumanAction]:
        """Every action posted for the intent so far, in the order they were posted (``round``: the boundary the
        planner is at, for scripted fakes; the store's answer does not depend on it)."""
        ...

    def now(self) -> float:
        """Seconds since the epoch (the review's clock)."""
        ...


class AwaitingReview(Exception):
    """The intent waits for a person: its checkpoint holds the review state. Run it again (it resumes from the
    checkpoint) when an action is posted for it, or at ``deadline``."""

    def __init__(self, intent_id: str, since: float, deadline: float):
        super().__init__(f"intent {intent_id!r} waits for review since {since:.0f} (until {deadline:.0f})")
        self.intent_id = intent_id
        self.since = since
        self.deadline = deadline
