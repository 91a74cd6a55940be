"""The one fold over a campaign's outcomes: :class:`CampaignTally` turns IntentOutcome records, one at a time, into
the CampaignSummary and CampaignStatus the API answers with (the runner, the ingress, the store, the report and the
CLI all count this way), and :func:`add_counts` sums two CallCounts.

It reads :mod:`pipelines.records` (the outcomes) and yields :mod:`pipelines.wire` (the summary and status).
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from agents.messages import CallCounts
from agents.stats import paired_summary, reward_hacking_suspected
from pipelines.records import IntentOutcome
from pipelines.wire import MAX_ERRORS, CampaignState, CampaignStatus, CampaignSummary


def add_counts(a: CallCounts, b: CallCounts) -> CallCounts:
    """Field-wise sum (every numeric field, including ones added to CallCounts later)."""
    return type(a).model_validate({k: v + getattr(b, k) for k, v in a.model_dump().items()})


INTERVAL_SHARE = 0.05
"""While a campaign runs, its bootstrap intervals may take at most this share of the time (they cost n_boot x the
compared intents: ~0.1 s at 1,000 on one core, on the event loop that answers status requests)."""
MIN_INTERVAL_REFRESH_S = 1.0


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
        # (the counts' version, whether its intervals are exact, the summary): every fold or failure changes the
        # version, so a cached summary is never stale in its counts
        self._cached: tuple[int, bool, CampaignSummary] | None = None
        self._next_interval_at = 0.0  # time.monotonic() before which a running summary keeps its intervals
        self.errors: list[str] = []

    def fold(self, outcome: IntentOutcome, *, skipped: bool = False) -> None:
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
        self._counts["intents_failed"] += 1
        self.note(f"{intent_id}: {error}")

    def note(self, error: str) -> None:
        """An error that is no intent's (e.g. the store could not be read): kept with the last few, not counted."""
        self.errors = (self.errors + [error[:300]])[-MAX_ERRORS:]

    def summary(self, *, exact: bool = True) -> CampaignSummary:
        """The summary so far. Counts and means are always current; the bootstrap intervals are recomputed after new
        outcomes, except with ``exact=False`` (a running campaign's status), where they are refreshed at most every
        ``MIN_INTERVAL_REFRESH_S`` and so that they take at most ``INTERVAL_SHARE`` of the time (``ci_n`` then says
        over how many intents each was computed)."""
        version = sum(self._counts.values())
        if self._cached is not None and self._cached[0] == version and (self._cached[1] or not exact):
            return self._cached[2]
        now = time.monotonic()
        previous = self._cached[2] if self._cached is not None else None
        reuse = not exact and previous is not None and now < self._next_interval_at
        t0 = time.perf_counter()
        improvement = paired_summary(self._improvements, n_boot=self.n_boot,
                                     interval_from=previous.improvement if reuse else None)
        held_out = {k: paired_summary(v, n_boot=self.n_boot,
                                      interval_from=previous.held_out.get(k) if reuse else None)
                    for k, v in sorted(self._held_out.items())}
        if not reuse:
            cost = time.perf_counter() - t0
            self._next_interval_at = now + max(MIN_INTERVAL_REFRESH_S, cost / INTERVAL_SHARE)
        suspected = [k for k, s in held_out.items() if reward_hacking_suspected(improvement, s)]
        summary = CampaignSummary(
            intents_total=self.intents_total, **self._counts,
            search_costs=self._costs["beam"], baseline_costs=self._costs["best_of_n"],
            mean_best_score=self._best_scores_sum / self._best_scores_n if self._best_scores_n else None,
            improvement=improvement, held_out=held_out, reward_hacking_suspected=suspected,
        )
        self._cached = (version, not reuse, summary)
        return summary

    def status(self, campaign_id: str, state: CampaignState, started_at: float, finished_at: float | None = None,
               concurrency: int | None = None, rewriter_knows: str | None = None) -> CampaignStatus:
        """The status; while ``state`` is running its intervals may be a moment old (:meth:`summary`)."""
        summary = self.summary(exact=state is not CampaignState.running)
        return CampaignStatus(**summary.model_dump(), id=campaign_id, state=state, errors=list(self.errors),
                              started_at=started_at, finished_at=finished_at, concurrency=concurrency,
                              rewriter_knows=rewriter_knows)

    @classmethod
    def of(cls, outcomes: Iterable[IntentOutcome], intents_total: int) -> CampaignTally:
        tally = cls(intents_total)
        for outcome in outcomes:
            tally.fold(outcome)
        return tally
