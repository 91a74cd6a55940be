"""Model A/B in one campaign: the world model at two step counts, the same intents, search and seeds.

    PYTHONPATH=. python -m benchmarks.bench_ab                  # 120 held-out intents, 12 vs 4 steps
    PYTHONPATH=. python -m benchmarks.bench_ab --small          # 12 intents: the plumbing run

One campaign spec with ``ab`` (``pipelines.records.ABVariant``): variant ``a`` renders with ``--steps-a`` denoising
steps, variant ``b`` with ``--steps-b``, on the one shipped world checkpoint. It runs as the ingress runs it: the spec's
two variant campaigns (``CampaignSpec.variants``), each a :class:`pipelines.campaign.CampaignRunner` with its own
store and its own best-of-N baseline, one after the other on the same renderer; then ``pipelines.ab.read_comparison``
folds both from the store, as GET /v1/campaigns/{id}/ab does.

Both variants search with the same beam (``benchmarks.bench_world.search_config``: B=2, K=3, S=1, 4 rounds, at most
``--images`` images, stop when an image passes), the same seeds and the same agents. What each knows (nothing else
reaches it): the rewriter is ``agents.explorer.VocabularyExplorer`` over the image model's tokenizer words (no LLM);
the critic is the world's ``JudgeCritic`` (checks and feedback in the intent's own words). "Solved": the best image
passes every check (the search's score_threshold).

Reported per variant: accuracy [95% CI], the search over its own best-of-N, images, render seconds (the device time of
the pipeline calls, each image's share), cost per solved intent; paired b - a on the same intents [95% CI, w/t/l].
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time

from agents.config import RewriterConfig
from agents.explorer import VocabularyExplorer
from agents.messages import Intent
from benchmarks._util import add_record_options
from benchmarks.bench_world import BatchingRenderer, points, search_config
from pipelines.ab import ABComparison, read_comparison
from pipelines.campaign import CampaignRunner
from pipelines.records import ABManifest, CampaignSpec, ModelsRecord
from pipelines.store import campaign_store
from pipelines.world.eval import load_heldout
from pipelines.world.model import tokenizer_words
from pipelines.world.scenes import TAGS


def tokenizer_explorer(llm, config: RewriterConfig) -> VocabularyExplorer:
    """The rewriter of both variants (a campaign's ``rewriter`` factory): no LLM, the tokenizer's ~32k words."""
    return VocabularyExplorer(tokenizer_words(), keep_vocabulary_words=False)


def pick_intents(n: int) -> list[Intent]:
    rows = load_heldout()
    per_tag = -(-n // len(TAGS))
    return [Intent(id=r["id"], text=r["text"]) for t in TAGS for r in [x for x in rows if x["tag"] == t][:per_tag]]


async def run(args) -> str:
    from benchmarks._util import report
    from serving.config import DiffusionEngineConfig
    from serving.engines import DiffusionEngine
    from serving.presets import REPO_ROOT

    intents = pick_intents(12 if args.small else args.intents)
    search = search_config(args.images).model_copy(update={"run_baseline": True})
    spec = CampaignSpec(name="ab-world", intents=intents,
                        search=search.model_dump(exclude={"steps"}), baseline="all",
                        ab={"a": {"steps": args.steps_a}, "b": {"steps": args.steps_b}})
    weights = str(REPO_ROOT / "pipelines/world/weights")
    engine = DiffusionEngine(DiffusionEngineConfig(model=weights, device=args.device, dtype="float32",
                                                   max_batch_size=args.batch, local_files_only=True))
    renderer = BatchingRenderer(engine, args.batch)
    models = ModelsRecord(preset="world", diffusion=weights, diffusion_dtype="float32", llm=None, llm_dtype=None,
                          rewriter="benchmarks.bench_ab:tokenizer_explorer", critic="pipelines.world.critic:judge_critic")
    root = args.store or tempfile.mkdtemp(prefix="bench-ab-")
    manifest = ABManifest.of(spec, search.score_threshold, time.time())
    campaign_store(root, spec.campaign_id()).write_ab(manifest)
    states, walls = {}, {}
    for name, child in spec.variants().items():
        t0 = time.perf_counter()
        done = 0

        def progress(outcome, name=name) -> None:
            nonlocal done
            done += 1
            if done % max(1, len(intents) // 4) == 0:
                print(f"  {name}: {done}/{len(intents)} intents, {time.perf_counter() - t0:.0f} s", flush=True)

        runner = CampaignRunner(child, child.search_config(), renderer, None, campaign_store(root, child.campaign_id()),
                                models=models, concurrency=args.concurrency, on_intent_done=progress)
        states[name] = (await runner.run()).state
        walls[name] = time.perf_counter() - t0
    comparison = read_comparison(root, manifest, states)
    return report(f"Model A/B: world model at {args.steps_a} vs {args.steps_b} steps "
                  f"({'small' if args.small else f'{len(intents)} intents'})",
                  *rows(comparison, walls), notes=notes(args, comparison, len(intents), root, renderer),
                  record=args.record)


def rows(c: ABComparison, walls: dict[str, float]) -> tuple[list[str], list[list]]:
    header = ["variant", "steps", "intents", "accuracy [95% CI]", "search - own best-of-N", "images",
              "render s", "images/solved", "render s/solved", "wall s"]
    table = []
    for s in c.variants:
        acc = f"{s.accuracy:.3f} [{s.accuracy_ci[0]:.3f}, {s.accuracy_ci[1]:.3f}]" if s.accuracy is not None else "–"
        imp = s.improvement
        table.append([s.variant, s.steps, s.intents_finished, acc,
                      f"{imp.mean:+.3f} [{imp.ci_low:+.3f}, {imp.ci_high:+.3f}]" if imp.mean is not None else "–",
                      s.images, f"{s.render_seconds:.1f}",
                      f"{s.images_per_solved:.1f}" if s.images_per_solved else "–",
                      f"{s.render_seconds_per_solved:.2f}" if s.render_seconds_per_solved else "–",
                      f"{walls[s.variant]:.0f}"])
    d, sd = c.solved_difference, c.score_difference
    table.append([f"{c.difference} (paired)", "", d.n, f"{points(d)} points" if d.mean is not None else "–",
                  f"score {sd.mean:+.3f} [{sd.ci_low:+.3f}, {sd.ci_high:+.3f}]" if sd.mean is not None else "–",
                  "", "", "", "", f"{d.wins}/{d.ties}/{d.losses} w/t/l"])
    return header, table


def notes(args, c: ABComparison, n: int, root: str, renderer: BatchingRenderer) -> str:
    return (f"{n} held-out intents (spread over the tags), text only; one campaign spec with ab variants a "
            f"({args.steps_a} steps) and b ({args.steps_b} steps) on the shipped world checkpoint, run as its two "
            f"variant campaigns (CampaignRunner each, own best-of-N baseline at equal images) and compared by "
            f"pipelines.ab.read_comparison from the store. Beam B=2 K=3 S=1, 4 rounds, at most {args.images} images "
            f"per intent and arm, stops when an image passes (solved = best score >= {c.solved_at}); rewriter: "
            f"VocabularyExplorer over the tokenizer's words (no LLM); critic: the world's JudgeCritic. Same seeds for "
            f"the same candidates in both variants. 'render s': device seconds of the pipeline calls, each image's "
            f"share (search arm); cost per solved intent = search images or render seconds / solved intents. "
            f"{args.concurrency} intents in flight; render batches of up to {args.batch}; store {root}.")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_ab", description=__doc__.split("\n\n")[0])
    p.add_argument("--small", action="store_true", help="12 intents (2 per tag): the plumbing run.")
    p.add_argument("--intents", type=int, default=120, help="Intents, spread evenly over the tags (max 240).")
    p.add_argument("--steps-a", type=int, default=12, help="Variant a's denoising steps (the model card's).")
    p.add_argument("--steps-b", type=int, default=4, help="Variant b's denoising steps.")
    p.add_argument("--images", type=int, default=8, help="search.max_images per intent (each arm).")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--concurrency", type=int, default=8, help="Intents in flight at once.")
    p.add_argument("--store", default=None, help="Store root (default: a new temporary directory).")
    add_record_options(p)
    args = p.parse_args(argv)
    if not 4 <= args.intents <= 240:
        p.error(f"--intents must be between 4 and 240, got {args.intents}")
    if args.steps_a == args.steps_b:
        p.error("--steps-a and --steps-b must differ (nothing to compare)")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
