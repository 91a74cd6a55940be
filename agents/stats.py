"""Statistics of the search: the branch statistic selection uses, the paired search-vs-baseline summary (mean with a
bootstrap interval) and the reward-hacking rule that compares the optimised and held-out summaries.

Pure Python + NumPy (no Ray, vLLM or torch). Used by the planner, the campaign status, the report, the metrics and the
benchmarks, so every place quotes the same numbers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

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
    ci_n: int | None = Field(
        default=None, description="Pairs the interval was computed over: n, except in a running campaign's status, "
        "whose interval is refreshed at most every few seconds (its cost grows with the intents); a finished "
        "campaign's interval is over every pair.")


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


def paired_summary(differences: Sequence[float], *, n_boot: int = 2000, seed: int = 0,
                   interval_from: PairedSummary | None = None) -> PairedSummary:
    """Summarise per-intent differences (search best minus baseline best). With ``interval_from`` (an earlier summary
    of a prefix of the same differences) its interval is kept instead of bootstrapping again; ``ci_n`` says over how
    many pairs it was computed."""
    d = [float(v) for v in differences]
    if not d:
        return PairedSummary(n=0)
    if interval_from is not None and interval_from.ci_low is not None:
        low, high, ci_n = interval_from.ci_low, interval_from.ci_high, interval_from.ci_n
    else:
        (low, high), ci_n = bootstrap_ci(d, n_boot=n_boot, seed=seed), len(d)
    return PairedSummary(
        n=len(d), mean=sum(d) / len(d), ci_low=low, ci_high=high, ci_n=ci_n,
        wins=sum(v > TIE_EPS for v in d), ties=sum(abs(v) <= TIE_EPS for v in d), losses=sum(v < -TIE_EPS for v in d),
    )


# --------------------------------------------------------------------------------------------------------------------
# Branch statistic: prompts compared on shared seeds
# --------------------------------------------------------------------------------------------------------------------


def seed_adjusted_means(
    observations: Iterable[tuple[str, int, float]], *, ridge: float = 1.0, iterations: int = 50, tol: float = 1e-9
) -> dict[str, float]:
    """Each prompt's score on an average seed, from (prompt, seed, score) observations.

    Fits the additive model ``score = m[prompt] + b[seed]`` by alternating means (backfitting), with the seed effects
    shrunk toward 0 by ``ridge`` pseudo-observations. Why: in a paired search a child keeps its parent's best seed and
    adds a new one, so raw means would credit children with their parent's lucky seed; the seed effects, estimated
    from every prompt rendered on a seed, remove that. When all prompts share one seed set (round 0), ``m`` equals the
    plain mean; when no seed is shared (fresh seeds), it also equals the plain mean. Each result is clipped to the
    range of the prompt's own scores: the model may move a prompt within what it was seen to score, never beyond (so a
    score threshold is reached only by a prompt that did reach it on some seed).
    """
    by_prompt: dict[str, list[tuple[int, float]]] = {}
    by_seed: dict[int, list[tuple[str, float]]] = {}
    for prompt, seed, score in observations:
        by_prompt.setdefault(prompt, []).append((seed, score))
        by_seed.setdefault(seed, []).append((prompt, score))
    m = {p: sum(y for _, y in obs) / len(obs) for p, obs in by_prompt.items()}
    for _ in range(iterations):
        b = {s: sum(y - m[p] for p, y in obs) / (len(obs) + ridge) for s, obs in by_seed.items()}
        new = {p: sum(y - b[s] for s, y in obs) / len(obs) for p, obs in by_prompt.items()}
        delta = max((abs(new[p] - m[p]) for p in m), default=0.0)
        m = new
        if delta < tol:
            break
    return {p: min(max(m[p], min(y for _, y in obs)), max(y for _, y in obs)) for p, obs in by_prompt.items()}


# --------------------------------------------------------------------------------------------------------------------
# Per campaign: does a held-out scorer confirm the optimised gain?
# --------------------------------------------------------------------------------------------------------------------


def reward_hacking_suspected(optimized: PairedSummary, held_out: PairedSummary) -> bool:
    """True when the search improves the optimised score (its 95% interval lies above 0) while the held-out scorer
    does not confirm it (its interval reaches 0 or below): the search may be exploiting the critic.

    The one home of this rule (``pipelines.tally.CampaignTally`` applies it to a campaign's status, report and
    metrics). Without an interval on either side the answer is False, "not suspected", on purpose: the flag is a claim
    that the evidence disagrees, and a held-out scorer with no pairs (it scored none of the images both arms chose,
    e.g. it failed on them) gives no evidence either way. Raising the flag then would cry wolf on every campaign whose
    held-out scorer was missing; that case stays visible instead as ``held_out[name].n == 0``."""
    if optimized.ci_low is None or held_out.ci_low is None:
        return False
    return optimized.ci_low > TIE_EPS and held_out.ci_low <= TIE_EPS
