"""Campaign statistics: per-intent paired improvement (pipelines.records), the campaign interval, held-out figures and
the reward-hacking flag (agents.stats, applied by the production fold: pipelines.tally); the seed-adjusted branch
statistic."""

from __future__ import annotations

import numpy as np
import pytest

from agents.messages import CallCounts, Candidate, Critique, Intent, SearchResult
from agents.stats import PairedSummary, paired_summary, reward_hacking_suspected, seed_adjusted_means
from pipelines.records import IntentOutcome
from pipelines.tally import CampaignTally


def _result(mode: str, scores: list[float], held_out: list[float], intent_id: str = "i") -> SearchResult:
    intent = Intent(id=intent_id, text="x")
    cands = [
        Candidate(id=f"{mode}{n}", intent_id=intent_id, parent_id=None, round=0, prompt="x", seed=n,
                  source="original" if mode == "beam" else "baseline", score=s,
                  critique=Critique(alignment=s, quality=s, score=s, held_out={"judge": h}))
        for n, (s, h) in enumerate(zip(scores, held_out))
    ]
    best = max(cands, key=lambda c: c.score)
    return SearchResult(intent=intent, mode=mode, candidates=cands, best_id=best.id, rounds_run=1,
                        stop_reason="rounds", best_score_per_round=[best.score], counts=CallCounts())


def test_an_outcome_compares_the_best_images_on_both_scores():
    search = _result("beam", [0.5, 0.9, 0.7], [0.2, 0.3, 0.9])
    baseline = _result("best_of_n", [0.6, 0.4], [0.5, 0.1])
    outcome = IntentOutcome.done(search, baseline)
    assert outcome.improvement == pytest.approx(0.3)
    # held-out of the images a user receives (best by the optimised score), not the held-out maximum
    assert outcome.held_out_improvement == {"judge": pytest.approx(0.3 - 0.5)}
    alone = IntentOutcome.done(search, None)
    assert alone.improvement is None and alone.held_out_improvement == {}


def test_the_campaign_interval_covers_the_true_mean():
    rng = np.random.default_rng(3)
    true_mean, covered, campaigns = 0.04, 0, 100
    for c in range(campaigns):
        diffs = rng.normal(true_mean, 0.15, size=300)  # a synthetic campaign of 300 intents
        s = paired_summary(diffs, n_boot=400, seed=c)
        assert s.n == 300 and s.ci_low < s.mean < s.ci_high
        covered += s.ci_low <= true_mean <= s.ci_high
    assert 0.88 <= covered / campaigns <= 1.0


def _outcomes(held_out_gain: float, n: int = 200, seed: int = 0) -> list[IntentOutcome]:
    """A campaign whose search gains ~0.1 on the optimised score and ``held_out_gain`` on the held-out judge."""
    rng = np.random.default_rng(seed)
    out = []
    for k, (d, h) in enumerate(zip(rng.normal(0.1, 0.05, n), rng.normal(held_out_gain, 0.05, n))):
        search = _result("beam", [0.5 + d], [0.5 + h], intent_id=f"i{k}")
        out.append(IntentOutcome.done(search, _result("best_of_n", [0.5], [0.5], intent_id=f"i{k}")))
    return out


def test_reward_hacking_is_flagged_in_the_campaign_status_when_the_held_out_score_does_not_follow():
    """Through the production fold (CampaignTally: status, report and metrics read its summary)."""
    hacked = CampaignTally.of(_outcomes(0.0), 200).summary()
    assert hacked.improvement.ci_low > 0 and hacked.held_out["judge"].ci_low <= 0
    assert hacked.reward_hacking_suspected == ["judge"]
    honest = CampaignTally.of(_outcomes(0.08), 200).summary()
    assert honest.held_out["judge"].ci_low > 0 and honest.reward_hacking_suspected == []
    unpaired = CampaignTally.of([IntentOutcome.done(_result("beam", [0.9], [0.1]), None)] * 3, 3).summary()
    assert unpaired.improvement.n == 0 and unpaired.held_out == {} and unpaired.reward_hacking_suspected == []


def test_a_missing_interval_is_not_suspected():
    """No evidence is not evidence of reward hacking (agents.stats.reward_hacking_suspected says why)."""
    gain = PairedSummary(n=50, mean=0.1, ci_low=0.05, ci_high=0.15)
    assert reward_hacking_suspected(gain, PairedSummary(n=0)) is False
    assert reward_hacking_suspected(PairedSummary(n=0), PairedSummary(n=50, mean=-0.1, ci_low=-0.2, ci_high=0.0)) is False
    assert reward_hacking_suspected(gain, PairedSummary(n=50, mean=0.0, ci_low=-0.05, ci_high=0.05)) is True
    assert reward_hacking_suspected(gain, PairedSummary(n=50, mean=0.1, ci_low=0.04, ci_high=0.15)) is False


def test_seed_adjusted_means_equal_plain_means_when_seeds_are_all_shared_or_all_distinct():
    shared = [("a", 1, 0.5), ("a", 2, 0.7), ("b", 1, 0.4), ("b", 2, 0.6)]
    assert seed_adjusted_means(shared) == pytest.approx({"a": 0.6, "b": 0.5})
    distinct = [("a", 1, 0.5), ("a", 2, 0.7), ("b", 3, 0.9), ("b", 4, 0.1)]
    assert seed_adjusted_means(distinct) == pytest.approx({"a": 0.6, "b": 0.5})


def test_seed_adjusted_means_remove_a_shared_seed_effect():
    effects = {1: 0.3, 2: -0.2, 3: 0.0}
    quality = {"p": 0.5, "a": 0.3, "c": 0.45}
    design = {"p": [1, 2], "a": [1, 2], "c": [1, 3]}  # c keeps p's lucky seed 1 and adds a new seed 3
    obs = [(q, s, quality[q] + effects[s]) for q, seeds in design.items() for s in seeds]
    raw_c = np.mean([quality["c"] + effects[s] for s in design["c"]])
    raw_p = np.mean([quality["p"] + effects[s] for s in design["p"]])
    assert raw_c > raw_p  # by raw mean the worse prompt wins
    m = seed_adjusted_means(obs, ridge=0.0, iterations=500)
    assert m["p"] > m["c"] > m["a"]


def test_a_running_campaigns_intervals_are_refreshed_at_most_once_a_second_and_a_finished_ones_are_exact(monkeypatch):
    """The bootstrap costs n_boot x the compared intents on the event loop that answers status requests: while a
    campaign runs, the interval is kept between refreshes (ci_n says over how many intents it was computed), counts
    and means stay current; a finished campaign's status has the exact interval over every intent."""
    from pipelines import tally as tally_module
    from pipelines.wire import CampaignState

    clock = [100.0]
    monkeypatch.setattr(tally_module.time, "monotonic", lambda: clock[0])
    outcomes = _outcomes(0.0, n=60)
    t = CampaignTally(60, n_boot=300)
    for o in outcomes[:30]:
        t.fold(o)
    first = t.status("c", CampaignState.running, 0.0).improvement
    assert first.n == first.ci_n == 30
    for o in outcomes[30:]:
        t.fold(o)
    running = t.status("c", CampaignState.running, 0.0).improvement
    assert running.n == 60 and running.ci_n == 30  # counts current, interval from the last refresh
    assert (running.ci_low, running.ci_high) == (first.ci_low, first.ci_high)
    assert running.mean == pytest.approx(np.mean([o.improvement for o in outcomes]))
    exact = paired_summary([o.improvement for o in outcomes], n_boot=300)
    assert t.status("c", CampaignState.done, 0.0).improvement == exact  # finished: exact, over all 60
    clock[0] += 1.5  # a refresh is due: the running status computes it again
    t.fold(outcomes[0])
    assert t.status("c", CampaignState.running, 0.0).improvement.ci_n == 61
