"""``promptbeam world``: train and measure the world's text-to-image model."""

from __future__ import annotations

from pathlib import Path

import typer

world_app = typer.Typer(no_args_is_help=True, help="The measuring world: a small model trained here on drawn shapes, "
                        "judged by a detector.")


@world_app.command("train")
def train_cmd(
    out: Path = typer.Option(..., help="Directory for the trained pipeline (replaced at each save)."),
    device: str = typer.Option("cuda", help="'cuda' or 'cpu'."),
    minutes: float = typer.Option(5.0, min=0.05, max=600, help="Wall-clock budget, saves included."),
    seed: int = typer.Option(0, min=0),
    batch_size: int | None = typer.Option(None, min=2, help="Default: 256 on cuda, 32 on cpu."),
) -> None:
    """Train the world model inside a time budget (``python -m pipelines.world.train`` is the same function)."""
    from pydantic import ValidationError

    from pipelines.world.train import TrainConfig, train

    try:
        cfg = TrainConfig(out=str(out), device=device, minutes=minutes, seed=seed, batch_size=batch_size)
        train(cfg)
    except (ValidationError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


@world_app.command("eval")
def eval_cmd(
    model_dir: Path = typer.Argument(..., help="A trained world pipeline (e.g. pipelines/world/weights)."),
    headroom: bool = typer.Option(False, help="Oracle phrasing vs best-of-N on the held-out intents."),
    per_tag: int = typer.Option(50, min=1, help="Canonical specs per tag."),
    seeds: int = typer.Option(1, min=1, help="Images per canonical spec."),
    budget: int = typer.Option(8, min=1, help="Headroom: images per intent per arm."),
    phrasings: int = typer.Option(4, min=1, help="Headroom: phrasings the oracle tries (budget/phrasings seeds each)."),
    limit: int | None = typer.Option(None, min=1, help="Headroom: only the first N held-out intents."),
    record: bool = typer.Option(True, help="Append the table to benchmarks/RESULTS.md."),
) -> None:
    """Judge accuracy per tag (canonical wording), or with --headroom the rewording headroom."""
    from pipelines.world.eval import eval_canonical, eval_headroom

    if not model_dir.is_dir():
        typer.echo(f"error: model directory {str(model_dir)!r} does not exist", err=True)
        raise typer.Exit(2)
    try:
        if headroom:
            eval_headroom(str(model_dir), budget, phrasings, limit, record=record)
        else:
            eval_canonical(str(model_dir), per_tag, seeds, record=record)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
