"""Paired statistics: the bootstrap interval covers the true mean, win/tie/loss counts are exact."""

from __future__ import annotations

import numpy as np

from agents.stats import bootstrap_ci, paired_summary


def test_interval_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(1)
    covered = 0
    trials = 200
    for t in range(trials):
        sample = rng.normal(0.1, 0.3, size=80)
        low, high = bootstrap_ci(sample, n_boot=500, seed=t)
        covered += low <= 0.1 <= high
    assert 0.88 <= covered / trials <= 0.99


def test_summary_counts_and_orders_bounds():
    s = paired_summary([0.5, 0.0, -0.25, 0.25, 0.0])
    assert (s.n, s.wins, s.ties, s.losses) == (5, 2, 2, 1)
    assert s.mean == 0.1
    assert s.ci_low <= s.mean <= s.ci_high
    assert paired_summary([]).mean is None
    assert bootstrap_ci([0.3]) == (0.3, 0.3)
