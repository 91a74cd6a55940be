"""The one fold over a campaign's outcomes: :class:`CampaignTally` turns IntentOutcome records, one at a time, into
the CampaignSummary and CampaignStatus the API answers with (the runner, the ingress, the store, the report and the
CLI all count this way), and :func:`add_counts` sums two CallCounts.

It reads :mod:`pipelines.records` (the outcomes) and yields :mod:`pipelines.wire` (the summary and status).
"""

from __future__ import annotations

from collections.abc import Iterable

from agents.messages import CallCounts
from agents.stats import paired_summary, reward_hacking_suspected
from pipelines.records import IntentOutcome
from pipelines.wire import MAX_ERRORS, CampaignState, CampaignStatus, CampaignSummary


def add_counts(a: CallCounts, b: CallCounts) -> CallCounts:
    """Field-wise sum (every numeric field, including ones added to CallCounts later)."""
    return type(a).model_validate({k: v + getattr(b, k) for k, v in a.model_dump().items()})


class CampaignTally:
    """The one fold over a campaign's outcomes. The runner folds each intent as it commits (and, on resume, those
    committed earlier); the store, the ingress, the report and the CLI fold stored parts the same way.

    Holds one float per compared intent (for the bootstrap interval), not the outcomes."""

    def __init__(self, intents_total: int, *, n_boot: int = 2000):
        self.intents_total = intents_total
        self.n_boot = n_boot
        self._counts: dict[str, int] = {"intents_done": 0, "intents_rejected": 0, "intents_failed": 0,
                                        "intents_skipped": 0, "images_rendered": 0, "images_withheld": 0}
        self._costs = {"beam": CallCounts(), "best_of_n": CallCounts()}
        self._best_scores_sum = 0.0
        self._best_scores_n = 0
        self._improvements: list[float] = []
        self._held_out: dict[str, list[float]] = {}
        self._cached: tuple[int, CampaignSummary] | None = None
        self.errors: list[str] = []

    def fold(self, outcome: IntentOutcome, *, skipped: bool = False) -> None:
        self._cached = None
        self._counts["intents_rejected" if outcome.status == "rejected" else "intents_done"] += 1
        if skipped:
            self._counts["intents_skipped"] += 1
        for arm in outcome.arms:
            self._counts["images_rendered"] += arm.counts.images
            self._counts["images_withheld"] += arm.counts.images_withheld
            self._costs[arm.mode] = add_counts(self._costs[arm.mode], arm.counts)
        if outcome.search is not None and outcome.search.best_score is not None:
            self._best_scores_sum += outcome.search.best_score
            self._best_scores_n += 1
        if outcome.improvement is not None:
            self._improvements.append(outcome.improvement)
        for name, delta in outcome.held_out_improvement.items():
            self._held_out.setdefault(name, []).append(delta)

    def fail(self, intent_id: str, error: str) -> None:
        """An infrastructure failure: counted, its reason kept (the last few), nothing committed."""
        self._cached = None
        self._counts["intents_failed"] += 1
        self.note(f"{intent_id}: {error}")

    def note(self, error: str) -> None:
        """An error that is no intent's (e.g. the store could not be read): kept with the last few, not counted."""
        self._cached = None
        self.errors = (self.errors + [error[:300]])[-MAX_ERRORS:]

    def summary(self) -> CampaignSummary:
        """The summary so far (bootstrap intervals recomputed only after new outcomes)."""
        version = sum(self._counts.values())
        if self._cached is not None and self._cached[0] == version:
            return self._cached[1]
        improvement = paired_summary(self._improvements, n_boot=self.n_boot)
        held_out = {k: paired_summary(v, n_boot=self.n_boot) for k, v in sorted(self._held_out.items())}
        suspected = [k for k, s in held_out.items() if reward_hacking_suspected(improvement, s)]
        summary = CampaignSummary(
            intents_total=self.intents_total, **self._counts,
            search_costs=self._costs["beam"], baseline_costs=self._costs["best_of_n"],
            mean_best_score=self._best_scores_sum / self._best_scores_n if self._best_scores_n else None,
            improvement=improvement, held_out=held_out, reward_hacking_suspected=suspected,
        )
        self._cached = (version, summary)
        return summary

    def status(self, campaign_id: str, state: CampaignState, started_at: float, finished_at: float | None = None,
               concurrency: int | None = None, rewriter_knows: str | None = None) -> CampaignStatus:
        return CampaignStatus(**self.summary().model_dump(), id=campaign_id, state=state, errors=list(self.errors),
                              started_at=started_at, finished_at=finished_at, concurrency=concurrency,
                              rewriter_knows=rewriter_knows)

    @classmethod
    def of(cls, outcomes: Iterable[IntentOutcome], intents_total: int) -> CampaignTally:
        tally = cls(intents_total)
        for outcome in outcomes:
            tally.fold(outcome)
        return tally
