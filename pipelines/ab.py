"""Model A/B: one campaign's intents rendered on two renderers with the same search and seeds, compared paired by intent.

A campaign with ``ab`` (two :class:`pipelines.records.ABVariant`, e.g. two checkpoints on two renderer deployments, or
one model at two step counts) runs as two ordinary campaigns, ``<id>.<variant>``
(:meth:`pipelines.records.CampaignSpec.variants`): each with its own store, status, results, lineage, report and its
own best-of-N baseline (the baseline stays per model), resumed like any campaign. Both draw the same seeds for the
same candidates (seeds derive from the base seed, the intent id and the candidate id), so where the two searches
propose the same prompt they render it on the same noise; they differ only in the renderer and its settings.

The parent ``<id>`` holds ``ab.json`` (:class:`ABManifest`: which campaign is which variant). The comparison
(:func:`compare`) folds both variants' committed outcomes, intent by intent:

- per variant: accuracy (the share of finished intents whose best image reaches ``solved_at``, the search's
  ``score_threshold``) with a 95% bootstrap interval, mean best score, images and render seconds (the device time
  of the renderer's pipeline calls, each image's share), and cost per solved intent in both;
- paired, over intents both variants finished: the second variant minus the first in solved (the accuracy difference)
  and in best score, each a :class:`agents.stats.PairedSummary` (mean, 95% interval, wins/ties/losses).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from agents.stats import bootstrap_ci, paired_summary
from pipelines.records import ABManifest, IntentOutcome
from pipelines.store import campaign_store
from pipelines.wire import ABComparison, ABIntent, ABSide, CampaignState


def solved(outcome: IntentOutcome, solved_at: float) -> bool | None:
    """Whether the search's best image reaches ``solved_at``; None for an intent with no score (rejected)."""
    if outcome.search is None or outcome.search.best_score is None:
        return None
    return outcome.search.best_score >= solved_at


def side(manifest: ABManifest, variant: str, outcomes: Iterable[IntentOutcome], intents_total: int,
         state: CampaignState | None) -> tuple[ABSide, dict[str, IntentOutcome]]:
    """Fold one variant's outcomes; also returns them by intent id (for the pairing)."""
    by_id: dict[str, IntentOutcome] = {}
    hits: list[float] = []
    scores: list[float] = []
    improvements: list[float] = []
    images, seconds = 0, 0.0
    for o in outcomes:
        by_id[o.intent_id] = o
        if (s := solved(o, manifest.solved_at)) is not None:
            hits.append(float(s))
            scores.append(o.search.best_score)
        if o.search is not None:
            images += o.search.counts.images
            seconds += o.search.counts.render_seconds
        if o.improvement is not None:
            improvements.append(o.improvement)
    n_solved = int(sum(hits))
    v = manifest.variants[variant]
    return ABSide(
        variant=variant, campaign=manifest.campaigns[variant], renderer=v.renderer, steps=v.steps, state=state,
        intents_total=intents_total, intents_finished=len(by_id), solved=n_solved,
        accuracy=sum(hits) / len(hits) if hits else None, accuracy_ci=bootstrap_ci(hits) if hits else None,
        mean_best_score=sum(scores) / len(scores) if scores else None, images=images, render_seconds=seconds,
        images_per_solved=images / n_solved if n_solved else None,
        render_seconds_per_solved=seconds / n_solved if n_solved else None,
        improvement=paired_summary(improvements),
    ), by_id


def compare(manifest: ABManifest, outcomes: dict[str, Iterable[IntentOutcome]], intents_total: int,
            states: dict[str, CampaignState | None]) -> ABComparison:
    """The comparison of the two variants' outcomes (``outcomes`` and ``states`` keyed by variant name)."""
    first, second = manifest.variants
    sides, by_id = {}, {}
    for name in (first, second):
        sides[name], by_id[name] = side(manifest, name, outcomes[name], intents_total, states.get(name))
    solved_d, score_d = [], []
    for iid, a in by_id[first].items():
        b = by_id[second].get(iid)
        if b is None:
            continue
        sa, sb = solved(a, manifest.solved_at), solved(b, manifest.solved_at)
        if sa is None or sb is None:
            continue
        solved_d.append(float(sb) - float(sa))
        score_d.append(b.search.best_score - a.search.best_score)
    values = [s for s in states.values()]
    state = (CampaignState.running if CampaignState.running in values or None in values else
             CampaignState.done if all(s is CampaignState.done for s in values) else
             CampaignState.failed if CampaignState.failed in values else CampaignState.cancelled)
    return ABComparison(id=manifest.id, state=state, variants=[sides[first], sides[second]],
                        difference=f"{second} - {first}", solved_difference=paired_summary(solved_d),
                        score_difference=paired_summary(score_d), solved_at=manifest.solved_at)


def joined(intent_ids: Iterable[str], outcomes: dict[str, dict[str, IntentOutcome]]) -> Iterator[ABIntent]:
    """Per intent, in campaign order, each variant's outcome (None while unfinished)."""
    for iid in intent_ids:
        got = {name: by_id.get(iid) for name, by_id in outcomes.items()}
        text = next((o.intent for o in got.values() if o is not None), "")
        yield ABIntent(intent_id=iid, intent=text, variants=got)


def read_variants(root: str, manifest: ABManifest) -> tuple[list[str], dict[str, dict[str, IntentOutcome]]]:
    """(the intents in campaign order, each variant's committed outcomes by intent id) from the store under ``root``
    (blocking: store reads; a variant never started has none)."""
    ids: list[str] = []
    outcomes: dict[str, dict[str, IntentOutcome]] = {}
    for name, cid in manifest.campaigns.items():
        store = campaign_store(root, cid)
        stored = store.read_manifest()
        ids = ids or (stored.intent_ids if stored is not None else [])
        outcomes[name] = {o.intent_id: o for o in store.iter_outcomes(stored.intent_ids)} if stored else {}
    return ids, outcomes


def read_comparison(root: str, manifest: ABManifest, states: dict[str, CampaignState | None]) -> ABComparison:
    """:func:`compare` over the variants' committed outcomes in the store under ``root`` (blocking: store reads)."""
    ids, outcomes = read_variants(root, manifest)
    return compare(manifest, {name: got.values() for name, got in outcomes.items()}, len(ids), states)


def stored_state(root: str, campaign_id: str) -> CampaignState | None:
    """A variant's state as its store says when no run of it is live here: its compiled status's, else cancelled
    (started, not finished), else None (never started)."""
    store = campaign_store(root, campaign_id)
    if (status := store.read_status()) is not None:
        return status.state
    return CampaignState.cancelled if store.read_manifest() is not None else None
