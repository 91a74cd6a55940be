"""Measure a world model with the judge: per-tag accuracy on canonical wordings, and the headroom of rewording.

    python -m pipelines.world.eval DIR                 # per-tag judge accuracy, GenEval's wording, fixed seeded specs
    python -m pipelines.world.eval DIR --headroom      # oracle phrasing vs best-of-N on the held-out intents
    promptbeam world eval DIR [--headroom]             (the same functions)

Images are rendered through ``serving.engines.DiffusionEngine`` (the path campaigns use) at the model's recommended
steps and guidance, and judged on the CPU. Results print as tables and are appended to ``benchmarks/RESULTS.md``
(date, commit, machine) unless ``--no-record``.

**Headroom** (the world's reason to exist): for each held-out intent (``data/heldout.jsonl``: a spec and a user's
wording with at least one form training never showed), at an equal budget of ``budget`` images,

- *best-of-N*: the user's wording with ``budget`` seeds; the intent passes if any image passes the judge;
- *oracle phrasing* (:func:`oracle_texts`, the one oracle design, also an upper-bound arm of
  ``benchmarks/bench_world.py``): the user's wording plus ``phrasings - 1`` paraphrases drawn from the grammar's
  training distribution, ``budget / phrasings`` seeds each; the intent passes if any image passes.

Both arms draw on the planner's paired seeds (:func:`arm_seed`), the same seeds ``bench_world`` uses.

Both arms select with the same judge, so the gap is what rewording buys over resampling. Reported with 95% bootstrap
intervals (``agents.stats``): each arm's accuracy, and the paired per-intent difference.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections import defaultdict
from pathlib import Path

from pipelines.world.scenes import TAGS, SceneSpec, sample_spec

HELDOUT_FILE = Path(__file__).parent / "data" / "heldout.jsonl"
HELDOUT_SEED = 11
HELDOUT_PER_TAG = 40
CANONICAL_SEED = 1234


def canonical_specs(per_tag: int, seed: int = CANONICAL_SEED) -> list[SceneSpec]:
    """A fixed, seeded set of world specs per tag, worded as GenEval words them."""
    rng = random.Random(seed)
    return [sample_spec(tag, rng) for tag in TAGS for _ in range(per_tag)]


def build_heldout(per_tag: int = HELDOUT_PER_TAG, seed: int = HELDOUT_SEED) -> list[dict]:
    """The held-out benchmark intents: ``per_tag`` specs per tag, each with a held-out user wording."""
    from pipelines.world.grammar import heldout_wording

    rng = random.Random(seed)
    rows = []
    for tag in TAGS:
        for _ in range(per_tag):
            spec = sample_spec(tag, rng)
            wording = heldout_wording(spec, rng)
            # a neutral id: the intent's id reaches the rewriter, and tag names hold count words ("two_object")
            rows.append({"id": f"heldout-{len(rows):03d}", "tag": tag, "text": wording.text, "spec": spec.record()})
    return rows


def load_heldout(path: Path = HELDOUT_FILE) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class Judged:
    """Renders prompts with a DiffusionEngine and judges them, in batches."""

    def __init__(self, model_dir: str, batch: int = 32, steps: int | None = None, guidance: float | None = None):
        from pipelines.world.model import RECOMMENDED_GUIDANCE, RECOMMENDED_STEPS
        from serving.config import DiffusionEngineConfig
        from serving.engines import DiffusionEngine

        self.engine = DiffusionEngine(DiffusionEngineConfig(model=str(model_dir), device="cpu", dtype="float32",
                                                            max_batch_size=batch, local_files_only=True))
        self.steps = steps or RECOMMENDED_STEPS
        self.guidance = RECOMMENDED_GUIDANCE if guidance is None else guidance
        self.images = 0
        self.render_seconds = 0.0

    def passes(self, jobs: list[tuple[str, int, SceneSpec]]) -> list[bool]:
        """Render every (prompt, seed) and judge it against its spec."""
        from agents.messages import RenderRequest
        from pipelines.world.judge import judge
        from pipelines.world.scenes import CANVAS

        from tqdm.auto import tqdm

        reqs = [RenderRequest(request_id=str(i), prompt=p, seed=s, steps=self.steps, guidance_scale=self.guidance,
                              width=CANVAS, height=CANVAS) for i, (p, s, _) in enumerate(jobs)]
        results = []
        chunk = 8 * self.engine.config.max_batch_size  # progress in steps of a few pipeline calls
        with tqdm(total=len(reqs), desc="render + judge", unit="img", disable=len(reqs) <= chunk) as bar:
            for start in range(0, len(reqs), chunk):
                t0 = time.perf_counter()
                results.extend(self.engine.render(reqs[start:start + chunk]))
                self.render_seconds += time.perf_counter() - t0
                bar.update(min(chunk, len(reqs) - start))
        self.images += len(results)
        return [judge(r.png, spec).passed for r, (_, _, spec) in zip(results, jobs)]


def _ci(values: list[float]) -> tuple[float, float, float]:
    from agents.stats import bootstrap_ci

    low, high = bootstrap_ci(values)
    return sum(values) / len(values), low, high


def eval_canonical(model_dir: str, per_tag: int = 50, seeds: int = 1, record: bool = True) -> dict[str, float]:
    """Per-tag judge accuracy on GenEval's wording of ``per_tag`` fixed specs, ``seeds`` images each."""
    from pipelines.tables import report

    judged = Judged(model_dir)
    specs = canonical_specs(per_tag)
    jobs = [(s.prompt, seed, s) for s in specs for seed in range(seeds)]
    passed = judged.passes(jobs)
    by_tag: dict[str, list[float]] = defaultdict(list)
    for (_, _, spec), ok in zip(jobs, passed):
        by_tag[spec.tag].append(float(ok))
    rows, acc = [], {}
    for tag in TAGS:
        mean, low, high = _ci(by_tag[tag])
        acc[tag] = mean
        rows.append([tag, len(by_tag[tag]), mean, f"[{low:.3f}, {high:.3f}]"])
    overall = [v for tag in TAGS for v in by_tag[tag]]
    mean, low, high = _ci(overall)
    rows.append(["overall", len(overall), mean, f"[{low:.3f}, {high:.3f}]"])
    acc["overall"] = mean
    info = _model_info(model_dir)
    report(f"World model: judge accuracy per tag, canonical wording ({Path(model_dir).name})",
           ["tag", "images", "accuracy", "95% CI"], rows,
           notes=f"{per_tag} fixed specs per tag (seed {CANONICAL_SEED}) x {seeds} seed(s); {judged.steps} steps, "
                 f"guidance {judged.guidance}; {judged.images / judged.render_seconds:.1f} images/s rendering. "
                 f"Model: {info}", record=record)
    return acc


def oracle_texts(intent_id: str, text: str, spec: SceneSpec, phrasings: int) -> list[str]:
    """The oracle phrasing arm's prompts (the world's one oracle design, shared by ``--headroom`` and
    ``benchmarks/bench_world.py``): the user's wording and ``phrasings - 1`` training-distribution paraphrases of the
    spec, drawn with a generator seeded by the intent id. An upper bound: it knows the spec and the training
    grammar."""
    from pipelines.world.grammar import paraphrases

    rng = random.Random(f"oracle:{intent_id}")
    return [text, *paraphrases(spec, phrasings - 1, rng, avoid={text})]


def arm_seed(intent_id: str, i: int, base_seed: int = 0) -> int:
    """The i-th seed of an intent's arms: the planner's paired seed of round ``i`` (``agents.planner``), so best-of-N
    here, best-of-N in the planner and the oracle phrasing all draw on the same seeds."""
    from agents.planner import stable_seed

    return stable_seed(base_seed, intent_id, "seed", i, 0)


def eval_headroom(model_dir: str, budget: int = 8, phrasings: int = 4, limit: int | None = None,
                  record: bool = True) -> dict:
    """Oracle phrasing vs best-of-N on the user's wording at an equal image budget (see the module docstring)."""
    from agents.stats import paired_summary
    from pipelines.tables import report

    if budget % phrasings:
        raise ValueError(f"budget ({budget}) must be a multiple of phrasings ({phrasings})")
    intents = load_heldout()[:limit]
    judged = Judged(model_dir)
    seeds_each = budget // phrasings
    jobs, owners = [], []
    for k, row in enumerate(intents):
        spec = SceneSpec.model_validate(row["spec"])
        for s in range(budget):
            jobs.append((row["text"], arm_seed(row["id"], s), spec))
            owners.append((k, "best_of_n", 0))
        for j, text in enumerate(oracle_texts(row["id"], row["text"], spec, phrasings)):
            for s in range(seeds_each):
                jobs.append((text, arm_seed(row["id"], s), spec))
                owners.append((k, "oracle", j))
    passed = judged.passes(jobs)
    best = [0.0] * len(intents)
    oracle = [0.0] * len(intents)
    single = [0.0] * len(intents)
    for (k, arm, _), ok in zip(owners, passed):
        if arm == "best_of_n":
            best[k] = max(best[k], float(ok))
            single[k] += float(ok) / budget
        else:
            oracle[k] = max(oracle[k], float(ok))
    diffs = [o - b for o, b in zip(oracle, best)]
    summary = paired_summary(diffs)
    rows = []
    for name, values in [("one image, user's wording", single), (f"best-of-{budget}, user's wording", best),
                         (f"oracle: best of {phrasings} phrasings x {seeds_each} seeds", oracle)]:
        mean, low, high = _ci(values)
        rows.append([name, mean, f"[{low:.3f}, {high:.3f}]"])
    rows.append(["oracle - best-of-N (paired)", summary.mean, f"[{summary.ci_low:.3f}, {summary.ci_high:.3f}]"])
    per_tag = defaultdict(list)
    for row, d, b, o in zip(intents, diffs, best, oracle):
        per_tag[row["tag"]].append((b, o))
    tag_note = "; ".join(f"{t}: {sum(b for b, _ in v) / len(v):.2f} -> {sum(o for _, o in v) / len(v):.2f}"
                         for t, v in per_tag.items())
    report(f"World headroom: oracle phrasing vs best-of-{budget} on held-out wordings ({Path(model_dir).name})",
           ["arm", "judge accuracy", "95% CI"], rows,
           notes=f"{len(intents)} held-out intents (pipelines/world/data/heldout.jsonl), {budget} images per intent "
                 f"per arm; wins/ties/losses {summary.wins}/{summary.ties}/{summary.losses}. Per tag best-of-N -> "
                 f"oracle: {tag_note}. {judged.steps} steps, guidance {judged.guidance}. Model: "
                 f"{_model_info(model_dir)}", record=record)
    return {"n": len(intents), "best_of_n": sum(best) / len(best), "oracle": sum(oracle) / len(oracle),
            "single": sum(single) / len(single), "difference": summary.model_dump()}


def _model_info(model_dir: str) -> str:
    path = Path(model_dir) / "training.json"
    if not path.exists():
        return "no training.json"
    info = json.loads(path.read_text())
    runs = []  # a continued run keeps its parent's record: sum over the whole history
    while info:
        runs.append(info)
        info = info.get("parent")
    minutes = sum(r.get("total_seconds", 0) for r in runs) / 60
    steps = sum(r.get("diffusion", {}).get("steps", 0) for r in runs)
    images = sum(r.get("diffusion", {}).get("images", 0) for r in runs)
    return (f"trained {minutes:.1f} min in {len(runs)} run(s) on {runs[0].get('hardware')}, "
            f"{steps} diffusion steps, {images} images")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m pipelines.world.eval", description=__doc__.split("\n\n")[0])
    p.add_argument("model_dir")
    p.add_argument("--headroom", action="store_true", help="Oracle phrasing vs best-of-N on held-out intents.")
    p.add_argument("--per-tag", type=int, default=50)
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--budget", type=int, default=8)
    p.add_argument("--phrasings", type=int, default=4)
    p.add_argument("--limit", type=int, default=None, help="Only the first N held-out intents.")
    p.add_argument("--no-record", action="store_true", help="Print only; do not append to benchmarks/RESULTS.md.")
    a = p.parse_args(argv)
    if a.headroom:
        eval_headroom(a.model_dir, a.budget, a.phrasings, a.limit, record=not a.no_record)
    else:
        eval_canonical(a.model_dir, a.per_tag, a.seeds, record=not a.no_record)


if __name__ == "__main__":
    main()
