"""Campaign statistics: per-intent paired improvement, the campaign interval, held-out figures and the reward-hacking
flag; the seed-adjusted branch statistic."""

from __future__ import annotations

import numpy as np
import pytest

from agents.messages import CallCounts, Candidate, Critique, Intent, SearchResult
from agents.stats import PairedImprovement, compare_campaign, paired_improvement, seed_adjusted_means


def _result(mode: str, scores: list[float], held_out: list[float]) -> SearchResult:
    intent = Intent(id="i", text="x")
    cands = [
        Candidate(id=f"{mode}{n}", intent_id="i", parent_id=None, round=0, prompt="x", seed=n,
                  source="original" if mode == "beam" else "baseline", score=s,
                  critique=Critique(alignment=s, quality=s, score=s, held_out={"judge": h}))
        for n, (s, h) in enumerate(zip(scores, held_out))
    ]
    best = max(cands, key=lambda c: c.score)
    return SearchResult(intent=intent, mode=mode, candidates=cands, best_id=best.id, rounds_run=1,
                        stop_reason="rounds", best_score_per_round=[best.score], counts=CallCounts())


def test_paired_improvement_compares_the_best_images_on_both_scores():
    search = _result("beam", [0.5, 0.9, 0.7], [0.2, 0.3, 0.9])
    baseline = _result("best_of_n", [0.6, 0.4], [0.5, 0.1])
    p = paired_improvement(search, baseline)
    assert p.difference == pytest.approx(0.3)
    # held-out of the images a user receives (best by the optimised score), not the held-out maximum
    assert p.held_out == {"judge": pytest.approx(0.3 - 0.5)}
    assert paired_improvement(search, None) is None


def test_the_campaign_interval_covers_the_true_mean():
    rng = np.random.default_rng(3)
    true_mean, covered, campaigns = 0.04, 0, 100
    for c in range(campaigns):
        diffs = rng.normal(true_mean, 0.15, size=300)  # a synthetic campaign of 300 intents
        pairs = [PairedImprovement(search_best=0.5 + d, baseline_best=0.5, difference=d) for d in diffs]
        s = compare_campaign(pairs, n_boot=400, seed=c).optimized
        assert s.n == 300 and s.ci_low < s.mean < s.ci_high
        covered += s.ci_low <= true_mean <= s.ci_high
    assert 0.88 <= covered / campaigns <= 1.0


def test_reward_hacking_is_flagged_when_the_held_out_score_does_not_follow():
    rng = np.random.default_rng(0)

    def campaign(held_out_gain: float):
        return [PairedImprovement(search_best=0.6, baseline_best=0.5, difference=d,
                                  held_out={"judge": h})
                for d, h in zip(rng.normal(0.1, 0.05, 200), rng.normal(held_out_gain, 0.05, 200))]

    hacked = compare_campaign(campaign(0.0))
    assert hacked.optimized.ci_low > 0 and hacked.held_out["judge"].ci_low <= 0
    assert hacked.reward_hacking == ["judge"]
    honest = compare_campaign(campaign(0.08))
    assert honest.held_out["judge"].ci_low > 0 and honest.reward_hacking == []
    none = compare_campaign([None, None])
    assert none.optimized.n == 0 and none.reward_hacking == []


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
