"""Does the search earn its images? The real planner against a synthetic world, at equal image budget (CPU, < 1 min).

It measures the search algorithm, not images: a documented synthetic renderer and critic stand in for the models.

**The world** (one per intent, every draw a deterministic function of (intent, prompt, seed), so every arm sees the
same world — common random numbers across arms):

- each prompt has a hidden quality ``q``; the intent's own text has ``q ~ N(0, 1)``;
- a rewrite of a prompt moves its quality up or down: ``q_child = q_parent + N(drift, sigma_rewrite)``; the rewriter
  sees only what the planner shows it (no oracle), it just names children;
- each seed adds noise: a seed effect ``s ~ N(0, sigma_seed)`` shared by every prompt rendered on that seed (the same
  noise lays out the same composition) plus a prompt x seed interaction ``e ~ N(0, sigma_interaction)``;
- an image's true quality is ``sigmoid(q + s + e)``; the critic reports ``sigmoid(q + s + e + c)`` with a per-image
  judging error ``c ~ N(0, sigma_critic)``; its one check passes when ``q + s + e + c > 0``.

**The arms** (same budget N = the search's planned images; no early stop, so every arm spends exactly N):
best-of-N (the planner's baseline arm: the intent's text on N seeds), fresh-seed search (every image its own seed),
paired search (the default: shared seeds per round, children keep their parent's best seed, seed-adjusted branch
score) and, as an ablation, paired search ranked by the raw mean.

**The figure**: per intent, the true quality of the image each arm returns (its best by the critic's score) minus that
of best-of-N's; mean over intents with a 95% bootstrap interval and win/tie/loss counts (``agents.stats``). The critic
score difference (what a campaign reports) is shown beside it.

    PYTHONPATH=. .venv/bin/python -m benchmarks.bench_search_sim [--intents 500] [--record]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import math
import time
from dataclasses import dataclass
from statistics import NormalDist

from agents.config import CriticConfig, SearchConfig
from agents.critic import build_critique
from agents.messages import (
    Candidate,
    Check,
    Critique,
    Intent,
    RendererInfo,
    RenderRequest,
    RenderResult,
    RewriteContext,
    RewriteReply,
)
from agents.planner import BeamSearchPlanner
from agents.stats import paired_summary
from benchmarks._util import add_record_options, report

_NORMAL = NormalDist()


@dataclass(frozen=True)
class World:
    """The synthetic world's parameters (see the module docstring)."""

    name: str
    sigma_rewrite: float = 0.6
    drift: float = -0.1
    sigma_seed: float = 0.5
    sigma_interaction: float = 0.25
    sigma_critic: float = 0.2

    def normal(self, *key: object) -> float:
        """A standard normal draw that depends only on ``key``."""
        digest = hashlib.blake2b(repr(key).encode(), digest_size=8).digest()
        u = (int.from_bytes(digest, "big") + 0.5) / 2**64
        return _NORMAL.inv_cdf(u)

    def quality(self, intent: str, prompt: str) -> float:
        """Hidden quality: the intent's text draws its own; a child (``parent>tag``) moves from its parent's."""
        if ">" not in prompt:
            return self.normal("q", intent)
        parent = prompt.rsplit(">", 1)[0]
        return self.quality(intent, parent) + self.drift + self.sigma_rewrite * self.normal("rewrite", intent, prompt)

    def latent(self, intent: str, prompt: str, seed: int) -> float:
        return (self.quality(intent, prompt) + self.sigma_seed * self.normal("seed", intent, seed)
                + self.sigma_interaction * self.normal("x", intent, prompt, seed))

    def true_quality(self, intent: str, prompt: str, seed: int) -> float:
        return _sigmoid(self.latent(intent, prompt, seed))


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _image(intent: str, prompt: str, seed: int) -> bytes:
    return f"{intent}\x00{prompt}\x00{seed}".encode()


class SimRenderer:
    """'Renders' an image as the bytes naming (intent, prompt, seed): the critic looks the world up from them."""

    def __init__(self):
        self.images = 0

    async def info(self) -> RendererInfo:
        return RendererInfo(model="sim", max_prompt_tokens=None)

    async def count_tokens(self, prompts: list[str]) -> list[int]:
        return [len(p.split()) + 2 for p in prompts]

    async def render(self, requests: list[RenderRequest]) -> list[RenderResult]:
        self.images += len(requests)
        return [
            RenderResult(request_id=r.request_id, png=_image(r.request_id.split("/")[0], r.prompt, r.seed), seed=r.seed,
                         model="sim", width=r.width, height=r.height, steps=r.steps, batch_size=len(requests),
                         render_seconds=0.0)
            for r in requests
        ]


class SimCritic:
    """Scores an image as the critic of the world does (no LLM call: zero LLM cost), through the shared formula."""

    CONFIG = CriticConfig(weight_checks=0.0, weight_alignment=1.0, weight_quality=0.0)
    CHECKS = [Check(id="q1", question="Does the image show the intent?")]

    def __init__(self, world: World):
        self.world = world

    async def decompose(self, intent: Intent, *, request_id: str, seed: int) -> tuple[list[Check], None]:
        return self.CHECKS, None

    async def critique(self, png: bytes, intent: Intent, checks: list[Check], *, request_id: str, seed: int
                       ) -> tuple[Critique, None]:
        intent_id, prompt, image_seed = png.decode().split("\x00")
        w = self.world
        judged = w.latent(intent_id, prompt, int(image_seed)) + w.sigma_critic * w.normal("critic", intent_id, prompt,
                                                                                          image_seed)
        score = _sigmoid(judged)
        return build_critique(self.CONFIG, checks, {"q1": judged > 0}, alignment=score, quality=score), None


class SimRewriter:
    """Names ``k`` children of the current prompt (``parent>round.i``); their quality is the world's business."""

    async def propose(self, context: RewriteContext, *, request_id: str, seed: int, temperature: float) -> RewriteReply:
        return RewriteReply(prompts=[f"{context.current_prompt}>{context.round}.{i}" for i in range(context.k)])


class RawMeanPlanner(BeamSearchPlanner):
    """Ablation: ranks branches by the plain mean of their scores (no seed adjustment)."""

    @staticmethod
    def _branch_scores(state) -> dict[str, float]:
        sums: dict[str, list[float]] = {}
        for c in state.search.candidates:
            if c.score is not None:
                sums.setdefault(c.prompt, []).append(c.score)
        return {p: sum(v) / len(v) for p, v in sums.items()}


async def _sink(candidate: Candidate, png: bytes) -> str:
    return f"sim://{candidate.id}"


async def run_world(world: World, config: SearchConfig, n_intents: int) -> dict[str, dict[str, list[float]]]:
    """Per arm: per-intent true quality and critic score of the returned image, and images spent."""
    arms = {
        "paired search (default)": BeamSearchPlanner,
        "paired search, raw-mean ranking": RawMeanPlanner,
        "fresh-seed search": BeamSearchPlanner,
    }
    fresh = config.model_copy(update={"seed_mode": "fresh"})
    out: dict[str, dict[str, list[float]]] = {name: {"true": [], "score": [], "prompt": [], "images": []}
                                              for name in ["best-of-N", *arms]}
    critic = SimCritic(world)
    for n in range(n_intents):
        intent = Intent(id=f"i{n}", text=f"i{n}")
        for name, cls in arms.items():
            planner = cls(SimRenderer(), SimRewriter(), critic, fresh if name.startswith("fresh") else config,
                          image_sink=_sink)
            search, baseline = await planner.run_with_baseline(intent, baseline=name == "paired search (default)")
            for arm_name, res in [(name, search)] + ([("best-of-N", baseline)] if baseline else []):
                best = res.best
                out[arm_name]["true"].append(world.true_quality(intent.id, best.prompt, best.seed))
                out[arm_name]["score"].append(best.score)
                out[arm_name]["prompt"].append(world.quality(intent.id, best.prompt))
                out[arm_name]["images"].append(res.counts.images)
    return out


WORLDS = [
    World("prompts differ"),
    World("prompts differ a little", sigma_rewrite=0.3),
    World("seeds dominate", sigma_rewrite=0.4, sigma_seed=1.0, sigma_interaction=0.1),
    World("prompts do not differ", sigma_rewrite=0.0, drift=0.0),
]


def _ci(summary) -> str:
    return f"{summary.mean:+.3f} [{summary.ci_low:+.3f}, {summary.ci_high:+.3f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--intents", type=int, default=500)
    add_record_options(parser)
    args = parser.parse_args()

    # Equal budget for every arm: no early stop (a clipped branch score never reaches 1.0; patience = rounds).
    config = SearchConfig(score_threshold=1.0, patience=SearchConfig().rounds)
    rows = []
    t0 = time.perf_counter()
    for world in WORLDS:
        out = asyncio.run(run_world(world, config, args.intents))
        base = out["best-of-N"]
        for arm, v in out.items():
            images = sum(v["images"]) / len(v["images"])
            if arm == "best-of-N":
                rows.append([world.name, arm, images, "–", "–", "–", "–"])
                continue
            d_true = paired_summary([a - b for a, b in zip(v["true"], base["true"])], seed=1)
            d_score = paired_summary([a - b for a, b in zip(v["score"], base["score"])], seed=1)
            d_prompt = paired_summary([a - b for a, b in zip(v["prompt"], base["prompt"])], seed=1)
            rows.append([world.name, arm, images, _ci(d_true), f"{d_score.mean:+.3f}", _ci(d_prompt),
                         f"{d_true.wins}/{d_true.ties}/{d_true.losses}"])
        paired, fresh = out["paired search (default)"], out["fresh-seed search"]
        d_true = paired_summary([a - b for a, b in zip(paired["true"], fresh["true"])], seed=1)
        d_prompt = paired_summary([a - b for a, b in zip(paired["prompt"], fresh["prompt"])], seed=1)
        rows.append([world.name, "paired minus fresh-seed", "", _ci(d_true), "", _ci(d_prompt),
                     f"{d_true.wins}/{d_true.ties}/{d_true.losses}"])
    seconds = time.perf_counter() - t0
    w = WORLDS[0]
    notes = (
        f"{args.intents} synthetic intents per world; search config B={config.beam_width}, K={config.candidates_per_beam}, "
        f"R={config.rounds}, S={config.seeds_per_prompt}, E={config.explore_seeds} ({config.planned_images()} images per "
        f"arm per intent, no early stop). World 'prompts differ': q ~ N(0,1), rewrite step N({w.drift}, "
        f"{w.sigma_rewrite}), seed effect sd {w.sigma_seed}, prompt x seed sd {w.sigma_interaction}, critic error sd "
        f"{w.sigma_critic}; the others change what their name says (see WORLDS). Δ image = true quality (sigmoid of "
        "the latent, no critic error) of the image the arm returns minus best-of-N's, mean with 95% bootstrap CI; "
        "Δ critic = the same in critic score (what a campaign reports); Δ prompt = hidden quality q (latent scale) of "
        f"that image's prompt minus the original's; W/T/L on Δ image. {seconds:.0f} s on CPU."
    )
    report("Search vs best-of-N at equal image budget (synthetic world, real planner)",
           ["world", "arm", "images/intent", "Δ image vs best-of-N [95% CI]", "Δ critic", "Δ prompt q [95% CI]",
            "W/T/L"], rows, notes, record=args.record)


if __name__ == "__main__":
    main()
