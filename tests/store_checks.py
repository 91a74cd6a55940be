"""The check every fault test ends with: each intent committed exactly once, nothing duplicated, nothing half-written."""

from __future__ import annotations

import io
from collections import Counter

from pipelines.store import CampaignStore


def assert_each_intent_once(store: CampaignStore, intent_ids: list[str], *, whole: bool = False) -> None:
    """Every intent once in results.jsonl, every candidate once in lineage.jsonl, and every intent in the lineage.
    With ``whole``, also: every part parses, every image its lineage names decodes, and no checkpoint is left."""
    from PIL import Image

    results = Counter(o.intent_id for o in store.iter_outcomes(intent_ids))
    assert set(results) == set(intent_ids) and max(results.values()) == 1, results
    lineage = Counter(r.id for r in store.iter_lineage())
    assert lineage and max(lineage.values()) == 1, [k for k, n in lineage.items() if n > 1]
    assert {r.split("/")[0] for r in lineage} == set(intent_ids)
    if not whole:
        return
    for intent_id in intent_ids:
        part = store.read_part(intent_id)  # parses, or raises StoreFormatError naming the file
        for record in part.lineage:
            Image.open(io.BytesIO(store.fs.cat_file(store.path(record.image)))).load()
    assert not store.fs.find(store.path("checkpoints"))  # every intent finished: no checkpoint left
