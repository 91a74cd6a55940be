"""Paired comparison statistics: search vs baseline per intent, summarised per campaign with a bootstrap interval.

Pure Python + NumPy (no Ray, vLLM or torch). Used by the planner's results, the campaign status, the report, the
metrics and the benchmarks, so every place quotes the same numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

TIE_EPS = 1e-9
"""Differences smaller than this count as ties."""


class PairedSummary(BaseModel):
    """Mean of paired differences (search minus baseline, same intent, same critic) with a 95% bootstrap interval."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n: int = Field(description="Pairs (intents with both a search and a baseline score).")
    mean: float | None = Field(default=None, description="Mean difference; None without pairs.")
    ci_low: float | None = Field(default=None, description="2.5th percentile of the bootstrap distribution of the mean.")
    ci_high: float | None = Field(default=None, description="97.5th percentile of the bootstrap distribution.")
    wins: int = 0
    ties: int = 0
    losses: int = 0


def bootstrap_ci(values: Sequence[float], *, level: float = 0.95, n_boot: int = 2000, seed: int = 0
                 ) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean. Deterministic for a given ``seed``; one value gives a point."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    if x.size == 1:
        return float(x[0]), float(x[0])
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    chunk = max(1, 2_000_000 // x.size)  # bounded memory for large campaigns
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        idx = rng.integers(0, x.size, size=(stop - start, x.size))
        means[start:stop] = x[idx].mean(axis=1)
    alpha = (1 - level) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def paired_summary(differences: Sequence[float], *, n_boot: int = 2000, seed: int = 0) -> PairedSummary:
    """Summarise per-intent differences (search best minus baseline best)."""
    d = [float(v) for v in differences]
    if not d:
        return PairedSummary(n=0)
    low, high = bootstrap_ci(d, n_boot=n_boot, seed=seed)
    return PairedSummary(
        n=len(d), mean=sum(d) / len(d), ci_low=low, ci_high=high,
        wins=sum(v > TIE_EPS for v in d), ties=sum(abs(v) <= TIE_EPS for v in d), losses=sum(v < -TIE_EPS for v in d),
    )
