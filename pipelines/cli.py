"""The ``promptbeam`` command line."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Iterative prompt refinement for text-to-image.")
models_app = typer.Typer(no_args_is_help=True, help="Model files.")
app.add_typer(models_app, name="models")
console = Console(stderr=True)


@models_app.command("make-tiny")
def make_tiny(
    directory: Path = typer.Argument(..., help="Where to write diffusion/, llm/ and vlm/."),
    force: bool = typer.Option(False, help="Rebuild even if complete models are there."),
) -> None:
    """Build tiny random-weight models offline (a Stable-Diffusion-style pipeline, a chat LLM, a Qwen2-VL VLM)."""
    from serving.tiny_models import make_tiny_models

    with console.status(f"building tiny models in {directory}"):
        paths = make_tiny_models(directory, force=force)
    for name, path in paths.items():
        console.print(f"{name:10s} {path}")


def _safe_name(candidate_id: str) -> str:
    return candidate_id.replace("/", "__")


@app.command()
def search(
    text: str = typer.Argument(..., help="The intent: what you want to see."),
    out: Path = typer.Option(Path("runs/search"), help="Output directory (images/, result.json, baseline.json)."),
    profile: str = typer.Option("tiny", help="Model profile: 'tiny' (offline CPU) or 'gpu'."),
    rounds: int = typer.Option(2, min=1, help="Search rounds including round 0."),
    beam_width: int = typer.Option(2, min=1),
    candidates_per_beam: int = typer.Option(2, min=1),
    seed: int = typer.Option(0, min=0, help="Base seed: same seed, same lineage."),
) -> None:
    """Refine one intent in-process (no Ray): beam search plus the best-of-N baseline at equal image budget."""
    from pydantic import ValidationError

    from agents.config import SearchConfig
    from agents.messages import Intent

    try:
        intent = Intent(id="intent", text=text)
        from serving.profiles import get_profile

        prof = get_profile(profile)
        config = SearchConfig(
            rounds=rounds, beam_width=beam_width, candidates_per_beam=candidates_per_beam, base_seed=seed,
            patience=rounds, width=prof.width, height=prof.height, steps=prof.steps, guidance_scale=prof.guidance_scale,
        )
    except (ValidationError, ValueError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    asyncio.run(_search(intent, config, prof, out))


async def _search(intent, config, prof, out: Path) -> None:
    from agents.critic import Critic
    from agents.planner import BeamSearchPlanner
    from agents.rewriter import Rewriter
    from pipelines.adapters import LocalLanguageModel, LocalRenderer
    from serving.engines import DiffusionEngine, LLMEngine

    if prof.name == "tiny":
        from serving.tiny_models import make_tiny_models

        with console.status("building tiny models"):
            make_tiny_models(Path(prof.diffusion.model).parent)
    with console.status("loading diffusion and LLM engines"):
        diffusion = DiffusionEngine(prof.diffusion)
        llm_engine = LLMEngine(prof.llm)
    try:
        llm = LocalLanguageModel(llm_engine)
        planner = BeamSearchPlanner(LocalRenderer(diffusion), Rewriter(llm), Critic(llm), config)
        with console.status("searching"):
            result = await planner.run(intent)
            baseline = await planner.run_baseline(intent, result.counts.images, checks=result.checks)
    finally:
        llm_engine.shutdown()
    (out / "images").mkdir(parents=True, exist_ok=True)
    for res in (result, baseline):
        for cid, png in res.images.items():
            (out / "images" / f"{_safe_name(cid)}.png").write_bytes(png)
    (out / "result.json").write_text(result.model_dump_json(indent=2))
    (out / "baseline.json").write_text(baseline.model_dump_json(indent=2))
    table = Table(title=f"intent: {intent.text}")
    for col in ("round", "candidate", "score", "status", "prompt"):
        table.add_column(col)
    for c in result.candidates:
        table.add_row(str(c.round), c.id, f"{c.score:.3f}" if c.score is not None else "-", c.status.value, c.prompt[:60])
    Console().print(table)
    best, base = result.best, baseline.best
    console.print(
        f"best {best.score if best else None!s:.5} ({result.counts.images} images, stop: {result.stop_reason}); "
        f"best-of-{baseline.counts.images} baseline {base.score if base else None!s:.5}; written to {out}"
    )


def main() -> None:  # pragma: no cover - console script entry
    logging.basicConfig(level=os.environ.get("PROMPTBEAM_LOG", "WARNING"))
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
