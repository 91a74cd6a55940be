"""Statistics of the search: the branch statistic selection uses, and the paired search-vs-baseline comparison per
intent, summarised per campaign with a bootstrap interval (optimised and held-out scores side by side).

Pure Python + NumPy (no Ray, vLLM or torch). Used by the planner, the campaign status, the report, the metrics and the
benchmarks, so every place quotes the same numbers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from agents.messages import SearchResult

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
# Per intent and per campaign: search vs baseline, optimised and held-out scores
# --------------------------------------------------------------------------------------------------------------------


class PairedImprovement(BaseModel):
    """One intent's paired comparison: the search's best image vs the baseline's best image, same checks, same critic.

    ``held_out`` holds, per held-out scorer, the held-out score of the search's best image minus that of the baseline's
    best image (both chosen by the optimised score, as a user would receive them)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    search_best: float
    baseline_best: float
    difference: float
    held_out: dict[str, float] = Field(default_factory=dict)


def paired_improvement(search: SearchResult, baseline: SearchResult | None) -> PairedImprovement | None:
    """The comparison for one intent; None without a baseline or without a scored image in either arm."""
    best, base = search.best, baseline.best if baseline else None
    if best is None or base is None or best.score is None or base.score is None:
        return None
    held_out = {}
    if best.critique and base.critique:
        for name in best.critique.held_out.keys() & base.critique.held_out.keys():
            held_out[name] = best.critique.held_out[name] - base.critique.held_out[name]
    return PairedImprovement(
        search_best=best.score, baseline_best=base.score, difference=best.score - base.score, held_out=held_out
    )


class CampaignComparison(BaseModel):
    """A campaign's search-vs-baseline figures: the optimised score and, side by side, each held-out scorer."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    optimized: PairedSummary
    held_out: dict[str, PairedSummary] = Field(default_factory=dict)
    reward_hacking: list[str] = Field(
        default_factory=list,
        description="Held-out scorers that do not confirm the optimised gain (see reward_hacking_suspected).",
    )


def reward_hacking_suspected(optimized: PairedSummary, held_out: PairedSummary) -> bool:
    """True when the search improves the optimised score (its 95% interval lies above 0) while the held-out scorer
    does not confirm it (its interval reaches 0 or below): the search may be exploiting the critic."""
    if optimized.ci_low is None or held_out.ci_low is None:
        return False
    return optimized.ci_low > TIE_EPS and held_out.ci_low <= TIE_EPS


def compare_campaign(
    improvements: Iterable[PairedImprovement | None], *, n_boot: int = 2000, seed: int = 0
) -> CampaignComparison:
    """Summarise a campaign's per-intent comparisons (None entries, intents without a baseline, are skipped)."""
    pairs = [p for p in improvements if p is not None]
    optimized = paired_summary([p.difference for p in pairs], n_boot=n_boot, seed=seed)
    names = sorted({name for p in pairs for name in p.held_out})
    held_out = {
        name: paired_summary([p.held_out[name] for p in pairs if name in p.held_out], n_boot=n_boot, seed=seed)
        for name in names
    }
    return CampaignComparison(
        optimized=optimized,
        held_out=held_out,
        reward_hacking=[name for name, s in held_out.items() if reward_hacking_suspected(optimized, s)],
    )
