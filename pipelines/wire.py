"""The campaign API's wire types: what the HTTP routes answer and the client reads back, one definition each.

    CampaignState     running, done, cancelled, failed
    CampaignSummary   counts, per-arm costs and paired statistics over the finished intents (constant size)
    CampaignStatus    the summary with state and times: what GET /v1/campaigns/{id} returns
    CampaignAccepted  the answer to a submission
    ABComparison      GET /v1/campaigns/{id}/ab: a model A/B's two sides (ABSide) and their paired difference;
                      ABIntent, a line of its /ab/results
    CampaignPage      GET /v1/campaigns: a page of CampaignListing (id, state, progress, created time)
    ErrorBody         every error answer: a one-line detail and the fields at fault (FieldError)
    Health            the ingress's liveness answer
    ReviewListing     GET /v1/campaigns/{id}/review: the intents waiting for a person (WaitingIntent, ReviewBranch)

What a campaign submits and stores (CampaignSpec, IntentOutcome, ...) is :mod:`pipelines.records`; the fold that
makes a CampaignSummary out of stored outcomes is :mod:`pipelines.tally`.
"""

from __future__ import annotations

import enum
from typing import Literal

from pydantic import Field

from agents.messages import CallCounts
from agents.stats import PairedSummary
from pipelines.records import IntentOutcome, ModelsRecord, Record

MAX_ERRORS = 20
"""Infrastructure errors a status keeps (the last ones)."""


class CampaignState(str, enum.Enum):
    running = "running"
    done = "done"
    cancelled = "cancelled"
    failed = "failed"


class CampaignSummary(Record):
    """Counts, costs and statistics over the finished intents. Its size does not grow with the campaign: per-intent
    scores are in the results stream (GET .../results, paginated)."""

    intents_total: int
    intents_done: int = 0
    intents_rejected: int = 0
    intents_failed: int = Field(default=0, description="Infrastructure failures in this run (retried on resume).")
    intents_skipped: int = Field(default=0, description="Finished in an earlier run (resume).")
    images_rendered: int = Field(default=0, description="Both arms.")
    images_withheld: int = Field(default=0, description="Of those, images the output check withheld (both arms).")
    search_costs: CallCounts = Field(default_factory=CallCounts, description="Summed over intents: the search arm.")
    baseline_costs: CallCounts = Field(default_factory=CallCounts, description="Summed over intents: the baseline.")
    mean_best_score: float | None = None
    improvement: PairedSummary = Field(
        default_factory=lambda: PairedSummary(n=0),
        description="Search best minus baseline best per intent: mean, 95% bootstrap interval, wins/ties/losses.",
    )
    held_out: dict[str, PairedSummary] = Field(
        default_factory=dict, description="The same paired summary on each held-out scorer."
    )
    reward_hacking_suspected: list[str] = Field(
        default_factory=list,
        description="Held-out scorers on which the search does not improve (interval not above 0) while the "
        "optimised score does (interval above 0); see agents.stats.reward_hacking_suspected.",
    )

    @property
    def intents_finished(self) -> int:
        return self.intents_done + self.intents_rejected


class CampaignStatus(CampaignSummary):
    """GET /v1/campaigns/{id}: the summary plus state, times and the last infrastructure errors."""

    id: str
    state: CampaignState
    errors: list[str] = Field(default_factory=list, description=f"Last {MAX_ERRORS} infrastructure errors.")
    started_at: float
    finished_at: float | None = None
    concurrency: int | None = Field(default=None, description="Intents searched at once in this run.")
    rewriter_knows: str | None = Field(
        default=None, description="The rewriter in one line: what it reads (an ORACLE says it is one)."
    )
    budget_images: int | None = Field(
        default=None, description="The campaign's image budget for the search arm (CampaignSpec.budget_images)."
    )
    images_spent: int | None = Field(
        default=None, description="Search-arm images granted so far, in flight included (earlier runs too)."
    )
    images_remaining: int | None = Field(default=None, description="budget_images - images_spent.")
    budget_device_seconds: float | None = Field(
        default=None, description="The campaign's device-seconds budget (CampaignSpec.budget_device_seconds).")
    device_seconds_spent: float | None = Field(
        default=None, description="Device seconds charged so far: rendered rounds at what they took, rounds in flight "
        "at their reservation, the probes (earlier runs too).")
    device_seconds_remaining: float | None = Field(default=None, description="budget - spent.")
    device_seconds_overshoot: float | None = Field(
        default=None, description="Seconds charged beyond the reservations (images dearer than any seen before "
        "them); 0 while the budget's guarantee holds.")
    projected_finish_s: float | None = Field(
        default=None,
        description="Seconds until the campaign ends, projected from this run's rate so far: the sooner of the "
        "remaining budget at its spend rate and the unfinished intents at their finish rate; None before anything "
        "was spent or finished, and once the campaign has ended.",
    )
    intents_waiting: int = Field(default=0, description="Intents waiting for review now (CampaignSpec.review).")


class ABSide(Record):
    """One variant's outcomes: progress, accuracy and cost."""

    variant: str
    campaign: str
    renderer: str
    steps: int | None
    state: CampaignState | None = Field(default=None, description="Its campaign's state; None if never started.")
    intents_total: int
    intents_finished: int = 0
    solved: int = 0
    accuracy: float | None = Field(default=None, description="Solved share of the finished intents with a score.")
    accuracy_ci: tuple[float, float] | None = None
    mean_best_score: float | None = None
    images: int = Field(default=0, description="Search-arm images rendered.")
    render_seconds: float = Field(default=0.0, description="Search-arm device seconds (each image's share of its "
                                                           "pipeline call).")
    images_per_solved: float | None = None
    render_seconds_per_solved: float | None = None
    improvement: PairedSummary = Field(default_factory=lambda: PairedSummary(n=0),
                                       description="This variant's search over its own best-of-N baseline.")


class ABComparison(Record):
    """GET /v1/campaigns/{id}/ab: both sides and the paired difference (second variant minus first)."""

    id: str
    state: CampaignState = Field(description="running while either variant runs; else done if both are done.")
    variants: list[ABSide]
    difference: str = Field(description="Which side is subtracted from which, e.g. 'b - a'.")
    solved_difference: PairedSummary = Field(
        description="Per intent both finished: solved (0/1) of the second minus the first; the mean is the accuracy "
        "difference, with its 95% interval and wins/ties/losses.")
    score_difference: PairedSummary = Field(description="Per intent both finished: best score, second minus first.")
    solved_at: float


class ABIntent(Record):
    """One line of GET /v1/campaigns/{id}/ab/results: an intent as each variant finished it."""

    intent_id: str
    intent: str
    variants: dict[str, IntentOutcome | None] = Field(description="Variant -> its outcome; None: not finished yet.")


class CampaignAccepted(Record):
    id: str
    state: CampaignState
    intents: int
    resumed_intents: int = Field(description="Intents already finished in an earlier run of this campaign.")
    concurrency: int = Field(description="Intents searched at once.")
    status_url: str
    results_url: str
    variants: dict[str, str] | None = Field(default=None, description="A model A/B: variant -> its campaign id.")


class CampaignListing(Record):
    """One campaign in GET /v1/campaigns: enough to pick one to watch (its full status: GET /v1/campaigns/{id})."""

    id: str
    state: CampaignState
    intents_total: int = Field(ge=0)
    intents_finished: int = Field(ge=0, description="Done or rejected so far (the progress).")
    created_at: float = Field(description="When the campaign was first submitted (Unix seconds).")


class CampaignPage(Record):
    """GET /v1/campaigns: campaigns in id order, at most ``limit``; ``next_cursor`` is the ``cursor`` for the next
    page, None on the last one."""

    campaigns: list[CampaignListing]
    next_cursor: str | None = None


class FieldError(Record):
    """One reason a submission was refused: where (``search.rounds``, ``intents.3.id``) and why, never the input."""

    field: str
    reason: str


class ErrorBody(Record):
    """Every error the API returns: a one-line ``detail`` and, for validation failures, the fields."""

    detail: str
    errors: list[FieldError] | None = None


class Health(Record):
    """GET /healthz: liveness, the models served and the app's code version (in-place updates keep it)."""

    status: Literal["ok"] = "ok"
    preset: str
    models: ModelsRecord
    code_version: str | None


class ReviewBranch(Record):
    """One branch (a distinct prompt) of an intent waiting for review, as a person sees it to act on it."""

    prompt: str
    score: float | None = Field(description="Its branch score (seed-adjusted mean over its seeds); None: unscored.")
    seeds: int = Field(description="Images of it that were scored.")
    candidate_ids: list[str] = Field(description="Its candidates: any of them (or the prompt) names it in an action.")
    best_image: str | None = Field(description="Its best-scored image (store path, GET .../images/<name>).")
    in_beam: bool
    pinned: bool
    vetoed: bool
    source: str = Field(description="Who made it: original, rewrite, lesson, reseed or human.")


class WaitingIntent(Record):
    """An intent whose search stopped under the review threshold and waits for a person."""

    intent_id: str
    intent: str = Field(description="The intent's text.")
    best_score: float | None
    best_id: str | None
    best_image: str | None
    waiting_since: float = Field(description="Seconds since the epoch.")
    timeout_at: float = Field(description="When it finishes as it is unless a person acts (seconds since the epoch).")
    rounds: int
    branches: list[ReviewBranch] = Field(description="Best first; unscored ones last.")


class ReviewListing(Record):
    """GET /v1/campaigns/{id}/review."""

    campaign: str
    threshold: float | None = Field(description="The campaign's review threshold; None: intents never wait.")
    timeout_s: float | None = None
    intents: list[WaitingIntent]
