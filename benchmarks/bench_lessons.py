"""Does campaign memory pay? The honest world, equal images, the campaign's later intents against the same intents
searched without memory.

    PYTHONPATH=. python -m benchmarks.bench_lessons                    # 240 held-out intents, explorer arms
    PYTHONPATH=. python -m benchmarks.bench_lessons --llm qwen2.5-coder-0.5b-instruct --llm-intents 48
    PYTHONPATH=. python -m benchmarks.bench_lessons --small            # 12 intents: the CI plumbing run

A campaign is the held-out intents (``pipelines/world/data/heldout.jsonl``, text only) in one order: **fixed** (the
file's order) or **shuffled** (a seeded permutation). Every arm searches each intent with the same beam (B=2, K=3,
S=1, budget 8 images, stop when an image passes, ``benchmarks.bench_world.search_config``) on the same seeds, and
selects with the world's critic (``JudgeCritic``). Intents run ``--concurrency`` at a time in campaign order, so a
memory arm's intent sees the lessons of the intents that finished before it (as in a real campaign).

Arms and what each knows (nothing else reaches it):

- **best-of-8**: the intent's words on 8 seeds (reference);
- **explorer, no memory**: ``agents.explorer.VocabularyExplorer``: no language model; replaces one word of the
  prompt (a word of a failed check, when there is one) by an entry of the image model's public vocabulary: its
  tokenizer's words (``pipelines.world.model.tokenizer_words``: the CLIP BPE's ~32,000 whole words, what a real model
  publishes; ``--vocabulary tokenizer``, the default) or, labelled UPPER BOUND, ``ANSWER_WORDS`` (exactly the judge's
  20 answer words: a search over them enumerates the answers; ``--vocabulary answer-words``); every intent starts
  from nothing;
- **explorer + memory** ("memory alone": no LLM): the same, plus ``agents.memory.CampaignMemory``: edits that raised
  an earlier intent's critic score (learned from this campaign's own prompts and scores), offered as directly
  edited prompts in the beam;
- **LLM, no memory / LLM + memory** (``--llm``): ``agents.rewriter.Rewriter`` on a real pretrained instruct LLM in
  phrase-edit mode (``agents.edits``) with the critic's feedback, no vocabulary list; with memory it also sees the applicable lessons inside
  ``<user_data>`` and the lesson prompts compete in the beam. Run on the first ``--llm-intents`` of each order (the
  CPU LLM is slow) in the shuffled order (the fixed order's first intents are all of one tag).

Reported per arm and quarter of the campaign order: judge accuracy [95% CI], the paired difference against the same
intents without memory [95% CI], images per intent and per solved intent. Goal (issue 22): with memory, the last
quarter solves >= 10 points more than the same intents without memory at equal images, interval low end > 0.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time

from agents.config import CriticConfig, MemoryConfig, RewriterConfig
from agents.explorer import VocabularyExplorer
from agents.memory import CampaignMemory
from agents.messages import Intent
from agents.planner import BeamSearchPlanner
from agents.safety import OutputFilter
from agents.stats import paired_summary
from benchmarks._util import add_record_options
from benchmarks.bench_world import (
    PROMPT_CHARS,
    ArmRenderer,
    BatchingRenderer,
    keep_no_image,
    load_llm,
    mean_ci,
    points,
    run_best_of,
    search_config,
)
from pipelines.world.critic import PASS_SCORE, JudgeCritic
from pipelines.world.eval import load_heldout
from pipelines.world.model import ANSWER_WORDS, tokenizer_words
from pipelines.world.scenes import TAGS

GOAL_POINTS = 10.0
QUARTERS = 4


class Outcome:
    """Per-intent results of one arm: solved (0/1) and images spent."""

    def __init__(self):
        self.solved: dict[str, float] = {}
        self.images: dict[str, int] = {}
        self.memory: CampaignMemory | None = None


async def run_campaign(planner_for, order: list[Intent], concurrency: int, memory: CampaignMemory | None,
                       progress: str) -> Outcome:
    """Search ``order``'s intents, ``concurrency`` at a time, starting them in campaign order."""
    out = Outcome()
    out.memory = memory
    sem = asyncio.Semaphore(concurrency)
    t0 = time.perf_counter()

    async def one(n: int, intent: Intent) -> None:
        async with sem:
            result = await planner_for(memory).run(intent)
            best = result.best
            out.solved[intent.id] = float(best is not None and best.critique is not None
                                          and best.critique.score >= PASS_SCORE)
            out.images[intent.id] = result.counts.images
            if len(out.solved) % max(1, len(order) // 4) == 0:
                print(f"  {progress}: {len(out.solved)}/{len(order)} intents, {time.perf_counter() - t0:.0f} s",
                      flush=True)

    tasks = []
    for n, intent in enumerate(order):  # created in order: the semaphore admits them first come, first served
        tasks.append(asyncio.create_task(one(n, intent)))
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    return out


def quarters(ids: list[str]) -> list[list[str]]:
    n = len(ids)
    return [ids[q * n // QUARTERS:(q + 1) * n // QUARTERS] for q in range(QUARTERS)]


def rows_for(label: str, knows: str, arm: Outcome, control: Outcome | None, ids: list[str]) -> list[list]:
    rows = []
    for q, part in enumerate(quarters(ids) + [ids]):
        name = f"Q{q + 1}" if q < QUARTERS else "all"
        solved = [arm.solved[i] for i in part]
        images = sum(arm.images[i] for i in part)
        diff = "–" if control is None else points(paired_summary([arm.solved[i] - control.solved[i] for i in part]))
        rows.append([label if q == 0 else "", knows if q == 0 else "", name, len(part), mean_ci(solved), diff,
                     f"{images / len(part):.2f}", f"{images / sum(solved):.1f}" if sum(solved) else "–"])
    return rows


async def run(args) -> str:
    from benchmarks._util import report
    from serving.clients import LocalLanguageModel
    from serving.config import DiffusionEngineConfig
    from serving.engines import DiffusionEngine
    from serving.presets import REPO_ROOT

    rows = load_heldout()
    n = 12 if args.small else args.intents
    per_tag = -(-n // len(TAGS))
    picked = {r["id"] for t in TAGS for r in [x for x in rows if x["tag"] == t][:per_tag]}
    fixed = [Intent(id=r["id"], text=r["text"]) for r in rows if r["id"] in picked]  # the file's order
    shuffled = fixed[:]
    random.Random(args.order_seed).shuffle(shuffled)
    orders = {"fixed": fixed, "shuffled": shuffled}
    t_start = time.perf_counter()
    engine = DiffusionEngine(DiffusionEngineConfig(model=str(REPO_ROOT / "pipelines/world/weights"),
                                                   device=args.device, dtype="float32", max_batch_size=args.batch,
                                                   local_files_only=True))
    renderer = BatchingRenderer(engine, args.batch)
    critic = JudgeCritic(CriticConfig())
    base = search_config(args.budget, args.temperature)
    with_memory = base.model_copy(update={"memory": MemoryConfig(enabled=True)})
    vocabulary = tokenizer_words() if args.vocabulary == "tokenizer" else ANSWER_WORDS
    explorer = VocabularyExplorer(vocabulary, keep_vocabulary_words=args.vocabulary != "tokenizer")
    bound = "" if args.vocabulary == "tokenizer" else "UPPER BOUND: "
    vocab_knows = (f"tokenizer's {len(vocabulary):,} words" if args.vocabulary == "tokenizer"
                   else "the judge's 20 answer words")

    def planner(arm: str, rewriter, config):
        def make(memory: CampaignMemory | None) -> BeamSearchPlanner:
            return BeamSearchPlanner(ArmRenderer(renderer, arm), rewriter, critic, config, image_sink=keep_no_image,
                                     memory=memory)
        return make

    def new_memory() -> CampaignMemory:
        return CampaignMemory(with_memory.memory, OutputFilter())

    # best-of-8 and the no-memory arms do not depend on the order: run once, on the fixed order
    best_planner = planner("best_of", explorer, base)(None)
    best: dict[str, float] = {}
    sem = asyncio.Semaphore(args.concurrency)

    async def sampled(intent: Intent) -> None:
        async with sem:
            best[intent.id] = float(any(await run_best_of(best_planner, intent, args.budget)))

    await asyncio.gather(*(sampled(i) for i in fixed))
    best_arm = Outcome()
    best_arm.solved, best_arm.images = best, {i.id: args.budget for i in fixed}
    print(f"  best-of-{args.budget}: {sum(best.values()):.0f}/{len(best)} solved", flush=True)
    explore_plain = await run_campaign(planner("explore", explorer, base), fixed, args.concurrency, None,
                                       "explorer, no memory")
    results: dict[str, dict[str, Outcome]] = {}
    for name, order in orders.items():
        results[name] = {"explore_mem": await run_campaign(planner(f"explore_mem_{name}", explorer, with_memory),
                                                           order, args.concurrency, new_memory(),
                                                           f"explorer + memory, {name} order")}
    llm_desc = None
    if args.llm:
        llm_engine, llm_desc = load_llm(args.llm)
        try:
            llm = LocalLanguageModel(llm_engine)
            from agents.rewriter import Rewriter

            rewriter = Rewriter(llm, RewriterConfig(max_tokens=args.llm_max_tokens, max_prompt_chars=PROMPT_CHARS,
                                                    mode="edit"))
            for name, order in [("shuffled", shuffled)]:  # the fixed order's first intents are all one tag
                sub = order[: args.llm_intents]
                results[name]["llm"] = await run_campaign(planner(f"llm_{name}", rewriter, base), sub,
                                                          args.concurrency, None, f"LLM, no memory, {name} order")
                results[name]["llm_mem"] = await run_campaign(planner(f"llm_mem_{name}", rewriter, with_memory), sub,
                                                              args.concurrency, new_memory(),
                                                              f"LLM + memory, {name} order")
        finally:
            llm_engine.shutdown()
    wall = time.perf_counter() - t_start

    table_rows, goals, lessons_note = [], [], []
    for name, order in orders.items():
        ids = [i.id for i in order]
        res = results[name]
        table_rows += rows_for(f"best-of-{args.budget} ({name} order)", "the intent's words", best_arm, None, ids)
        table_rows += rows_for(f"{bound}explorer, no memory ({name} order)", f"{vocab_knows}, failed-check words",
                               explore_plain, None, ids)
        table_rows += rows_for(f"{bound}explorer + memory ({name} order)", "+ this campaign's lessons",
                               res["explore_mem"], explore_plain, ids)
        last = quarters(ids)[-1]
        diff = paired_summary([res["explore_mem"].solved[i] - explore_plain.solved[i] for i in last])
        met = 100 * diff.mean >= GOAL_POINTS and diff.ci_low > 0
        goals.append(f"{name} order, memory alone: {'met' if met else 'MISSED'} ({points(diff)} points in the last "
                     f"quarter, {diff.wins}/{diff.ties}/{diff.losses} wins/ties/losses)")
        if "llm" in res:
            sub = ids[: args.llm_intents]
            table_rows += rows_for(f"LLM, no memory ({name} order)", "phrase edits, critic's feedback", res["llm"],
                                   None, sub)
            table_rows += rows_for(f"LLM + memory ({name} order)", "+ this campaign's lessons", res["llm_mem"],
                                   res["llm"], sub)
            last = quarters(sub)[-1]
            diff = paired_summary([res["llm_mem"].solved[i] - res["llm"].solved[i] for i in last])
            met = 100 * diff.mean >= GOAL_POINTS and diff.ci_low > 0
            goals.append(f"{name} order, LLM + memory: {'met' if met else 'MISSED'} ({points(diff)} points in the "
                         f"last quarter of {len(sub)} intents)")
        memory = res["explore_mem"].memory
        top = memory.supported()[:8]
        lessons_note.append(f"{name} order: {len(memory.supported())} supported of {len(memory)} lessons; top: "
                            + ", ".join(f"'{le.before}'→'{le.after}' {le.wins}/{le.tries}" for le in top))
    notes = (f"{len(fixed)} held-out intents ({per_tag} per tag), text only; campaign orders: fixed (file order, "
             f"grouped by tag: {', '.join(TAGS)}) and shuffled (seed {args.order_seed}); budget {args.budget} images "
             f"per intent for every arm, same seeds; beam B=2 K=3 S=1, stops when an image passes; {args.concurrency} "
             f"intents in flight, started in campaign order. Δ: paired against the same intents searched without "
             f"memory. "
             + (f"LLM: {llm_desc}, first {args.llm_intents} intents of the shuffled order. " if llm_desc else
                "LLM arms not run (--llm). ")
             + "Goal (last quarter with memory >= +10 points over the same intents without memory, interval above "
             f"0): {'; '.join(goals)}. Lessons learned (explorer + memory): {' | '.join(lessons_note)}. "
             f"Render rate {renderer.images_per_second:.1f} images/s; wall time {wall:.0f} s.")
    return report(f"Campaign memory in the honest world ({'small' if args.small else f'{len(fixed)} intents'})",
                  ["arm", "what it knows", "quarter", "intents", "judge accuracy [95% CI]",
                   "Δ vs no memory, points [95% CI]", "images/intent", "images/solved intent"],
                  table_rows, notes=notes, record=args.record)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_lessons", description=__doc__.split("\n\n")[0])
    p.add_argument("--small", action="store_true", help="12 intents (2 per tag): the CI plumbing run.")
    p.add_argument("--intents", type=int, default=240, help="Intents, spread evenly over the tags (max 240).")
    p.add_argument("--budget", type=int, default=8, help="Images per intent, every arm.")
    p.add_argument("--order-seed", type=int, default=0, help="Seed of the shuffled campaign order.")
    p.add_argument("--llm", default=None, help="Also run the LLM arms with this model (`promptbeam models fetch` "
                   "name, a local directory, or 'tiny').")
    p.add_argument("--llm-intents", type=int, default=48, help="LLM arms: the first this many intents of each order.")
    p.add_argument("--llm-max-tokens", type=int, default=160)
    p.add_argument("--temperature", type=float, default=0.5)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--concurrency", type=int, default=8, help="Intents in flight at once.")
    p.add_argument("--vocabulary", choices=["tokenizer", "answer-words"], default="tokenizer",
                   help="The explorer's vocabulary: the model's tokenizer words (what a model publishes) or the "
                   "judge's answer words (an upper bound).")
    add_record_options(p)
    args = p.parse_args(argv)
    if not 4 <= args.intents <= 240:
        p.error(f"--intents must be between 4 and 240, got {args.intents}")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
