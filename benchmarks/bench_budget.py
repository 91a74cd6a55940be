"""Does sharing a campaign's image budget adaptively pay? The honest world, no language model, equal total images.

    PYTHONPATH=. python -m benchmarks.bench_budget                  # 96 held-out intents, 8 images per intent
    PYTHONPATH=. python -m benchmarks.bench_budget --small          # 12 intents: the plumbing run

A campaign is ``--intents`` held-out intents (``pipelines/world/data/heldout.jsonl``, text only, spread evenly over the
tags) in a seeded shuffled order, with a total budget of ``--per-intent`` x intents images for the search arm. Both
arms search every intent with the same beam (``benchmarks.bench_world.search_config``: B=2, K=3, S=1, 4 rounds, stop
when an image passes), the same seeds, the same rewriter and the same critic, and differ only in how the budget is
shared (``agents.allocation.ImageAllocator``):

- **even**: each intent spends at most its even share (budget / intents); what an intent leaves unspent is lost;
- **adaptive**: the same even start; an intent that stops (passes, plateaus, runs out of rounds) gives back what it
  did not spend, and intents still improving draw it, each up to ``--cap`` images.

What each arm knows (nothing else reaches it): the rewriter is ``agents.explorer.VocabularyExplorer`` (no LLM:
replaces a word of a failed check by an entry of the image model's public vocabulary, its tokenizer's words); the
critic is the world's ``JudgeCritic`` (checks and feedback in the intent's own words; the judge's spec never reaches
the rewriter or the planner). Intents run ``--concurrency`` at a time, started in campaign order, so with ``adaptive``
the pool an intent draws is what the intents that stopped before it gave back (as in a real campaign).

Reported per arm: judge accuracy [95% CI], images granted in all (<= the budget), images per intent, per solved
intent; and the paired difference adaptive - even on the same intents [95% bootstrap CI, wins/ties/losses].
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time

from agents.allocation import ImageAllocator
from agents.config import CriticConfig
from agents.explorer import VocabularyExplorer
from agents.messages import Intent
from agents.planner import BeamSearchPlanner
from agents.stats import paired_summary
from benchmarks._util import add_record_options
from benchmarks.bench_world import ArmRenderer, BatchingRenderer, keep_no_image, mean_ci, points, search_config
from pipelines.world.critic import PASS_SCORE, JudgeCritic
from pipelines.world.eval import load_heldout
from pipelines.world.model import tokenizer_words
from pipelines.world.scenes import TAGS


async def run_arm(make_planner, order: list[Intent], allocator: ImageAllocator, concurrency: int, label: str
                  ) -> tuple[dict[str, float], dict[str, int]]:
    """Search ``order`` ``concurrency`` at a time under ``allocator``: per intent, solved (0/1) and images rendered."""
    solved: dict[str, float] = {}
    images: dict[str, int] = {}
    sem = asyncio.Semaphore(concurrency)
    t0 = time.perf_counter()

    async def one(intent: Intent) -> None:
        async with sem:
            allowance = allocator.for_intent(intent.id)
            try:
                result = await make_planner(allowance).run(intent)
            finally:
                allowance.release()
            best = result.best
            solved[intent.id] = float(best is not None and best.critique is not None
                                      and best.critique.score >= PASS_SCORE)
            images[intent.id] = result.counts.images
            if len(solved) % max(1, len(order) // 4) == 0:
                print(f"  {label}: {len(solved)}/{len(order)} intents, {allocator.spent} images, "
                      f"{time.perf_counter() - t0:.0f} s", flush=True)

    tasks = []
    for intent in order:  # created in order: the semaphore admits them first come, first served
        tasks.append(asyncio.create_task(one(intent)))
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    return solved, images


async def run(args) -> str:
    from benchmarks._util import report
    from serving.config import DiffusionEngineConfig
    from serving.engines import DiffusionEngine
    from serving.presets import REPO_ROOT

    rows = load_heldout()
    n = 12 if args.small else args.intents
    per_tag = -(-n // len(TAGS))
    picked = {r["id"] for t in TAGS for r in [x for x in rows if x["tag"] == t][:per_tag]}
    order = [Intent(id=r["id"], text=r["text"]) for r in rows if r["id"] in picked]
    random.Random(args.order_seed).shuffle(order)
    budget = args.per_intent * len(order)
    t_start = time.perf_counter()
    engine = DiffusionEngine(DiffusionEngineConfig(model=str(REPO_ROOT / "pipelines/world/weights"),
                                                   device=args.device, dtype="float32", max_batch_size=args.batch,
                                                   local_files_only=True))
    renderer = BatchingRenderer(engine, args.batch)
    critic = JudgeCritic(CriticConfig())
    config = search_config(args.cap, args.temperature)
    explorer = VocabularyExplorer(tokenizer_words(), keep_vocabulary_words=False)
    ids = [i.id for i in order]
    out: dict[str, tuple[dict[str, float], dict[str, int], ImageAllocator]] = {}
    for rule in ("even", "adaptive"):
        allocator = ImageAllocator(budget, ids, max_per_intent=config.max_images, unit=config.seeds_per_prompt,
                                   rule=rule)

        def make(allowance, rule=rule) -> BeamSearchPlanner:
            return BeamSearchPlanner(ArmRenderer(renderer, rule), explorer, critic, config, image_sink=keep_no_image,
                                     allowance=allowance)

        solved, images = await run_arm(make, order, allocator, args.concurrency, rule)
        assert allocator.spent <= budget and sum(images.values()) <= allocator.spent
        out[rule] = (solved, images, allocator)
    wall = time.perf_counter() - t_start

    table = []
    for rule, (solved, images, allocator) in out.items():
        s = [solved[i] for i in ids]
        spent = sum(images.values())
        table.append([rule, len(ids), mean_ci(s), f"{spent} / {budget}", f"{spent / len(ids):.2f}",
                      f"{spent / sum(s):.1f}" if sum(s) else "–",
                      max(images.values())])
    diff = paired_summary([out["adaptive"][0][i] - out["even"][0][i] for i in ids])
    table.append(["adaptive - even (paired)", len(ids), f"{points(diff)} points", "", "", "",
                  f"{diff.wins}/{diff.ties}/{diff.losses} w/t/l"])
    notes = (f"{len(ids)} held-out intents ({per_tag} per tag, shuffled with seed {args.order_seed}), text only; "
             f"budget {budget} images ({args.per_intent} per intent) for the search arm of each campaign; beam B=2 "
             f"K=3 S=1, 4 rounds, stops when an image passes, at most {args.cap} images per intent under adaptive; "
             f"rewriter: VocabularyExplorer over the tokenizer's {len(tokenizer_words()):,} words (no LLM); critic: "
             f"the world's JudgeCritic; {args.concurrency} intents in flight. Both arms on the same seeds; 'images "
             f"granted' is what the allocator granted (rendered: the same; never above the budget). Render rate "
             f"{renderer.images_per_second:.1f} images/s; wall time {wall:.0f} s.")
    return report(f"Campaign image budget: adaptive vs even ({'small' if args.small else f'{len(ids)} intents'})",
                  ["arm", "intents", "judge accuracy [95% CI]", "images spent / budget", "images/intent",
                   "images/solved intent", "most images on one intent"],
                  table, notes=notes, record=args.record)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_budget", description=__doc__.split("\n\n")[0])
    p.add_argument("--small", action="store_true", help="12 intents (2 per tag): the plumbing run.")
    p.add_argument("--intents", type=int, default=96, help="Intents, spread evenly over the tags (max 240).")
    p.add_argument("--per-intent", type=int, default=8, help="The campaign budget is this x intents images.")
    p.add_argument("--cap", type=int, default=22, help="Most images one intent may spend (search.max_images); "
                   "22 is a full 4-round run.")
    p.add_argument("--order-seed", type=int, default=0)
    p.add_argument("--temperature", type=float, default=0.5)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--concurrency", type=int, default=8, help="Intents in flight at once.")
    add_record_options(p)
    args = p.parse_args(argv)
    if not 4 <= args.intents <= 240:
        p.error(f"--intents must be between 4 and 240, got {args.intents}")
    if args.cap < 4 or args.per_intent < 1:
        p.error("--cap must be at least 4 (round 0) and --per-intent at least 1")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
