"""A finished campaign of any size written directly as records (no models, no runner): for the report's tests at
10k intents and benchmarks/bench_report.py. Each intent has 2 search and 2 baseline candidates with small PNGs."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from agents.config import SearchConfig
from agents.messages import CallCounts, Candidate, Critique
from pipelines.records import ArmResult, IntentOutcome, IntentPart, LineageRecord, Manifest, ModelsRecord
from pipelines.store import CampaignStore


def _png(rgb: tuple[int, int, int], size: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), rgb).save(buf, format="PNG")
    return buf.getvalue()


def synthetic_store(root: Path, n: int, size: int = 8) -> CampaignStore:
    """A finished campaign of n intents written directly as records (2 search + 2 baseline candidates each)."""
    store = CampaignStore(str(root))
    store.create()
    search = SearchConfig(rounds=1, candidates_per_beam=1, seeds_per_prompt=1, max_images=2, width=size, height=size)
    models = ModelsRecord(preset="synthetic", diffusion="none", diffusion_dtype="auto", llm=None, llm_dtype=None,
                          rewriter="llm", critic="llm")
    ids = [f"s{k:05d}" for k in range(n)]
    store.write_manifest(Manifest(id="big", fingerprint="x", created_at=0.0, intents=n, intent_ids=ids, search=search,
                                  rewriter={}, critic={}, baseline="all", models=models, concurrency=1))
    colours = [_png((255 * (i % 2), 255 * (i // 2 % 2), 200), size) for i in range(4)]
    rng = np.random.default_rng(0)
    for k, intent_id in enumerate(ids):
        arms, lineage = {}, []
        for mode in ("beam", "best_of_n"):
            cands = []
            for j in range(2):
                cid = f"{intent_id}/{mode}/c{j}"
                (root / "images" / store.image_name(cid)).write_bytes(colours[(k + j + (mode == "beam")) % 4])
                score = float(rng.uniform())
                cands.append(Candidate(id=cid, intent_id=intent_id, parent_id=None, round=0, prompt=f"prompt {k} {j}",
                                       seed=j, source="original" if mode == "beam" else "baseline",
                                       image=f"images/{store.image_name(cid)}", score=score,
                                       critique=Critique(alignment=score, quality=score, score=score)))
            best = max(cands, key=lambda c: c.score)
            arms[mode] = ArmResult(mode=mode, best_id=best.id, best_prompt=best.prompt, best_seed=best.seed,
                                   best_image=best.image, best_score=best.score, rounds=1, stop_reason="rounds",
                                   best_score_per_round=[best.score], counts=CallCounts(images=2, llm_calls=3))
            lineage += [LineageRecord.of(c, mode) for c in cands]
        outcome = IntentOutcome(intent_id=intent_id, intent=f"synthetic intent {k}", status="done",
                                search=arms["beam"], baseline=arms["best_of_n"],
                                improvement=arms["beam"].best_score - arms["best_of_n"].best_score, checks=["q?"])
        (root / "parts" / f"{intent_id}.json").write_text(IntentPart(outcome=outcome, lineage=lineage).model_dump_json())
    return store
