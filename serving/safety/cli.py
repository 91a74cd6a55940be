"""``promptbeam verify IMAGE``: a tiny typer app that ``pipelines/cli.py`` mounts with ``app.add_typer(verify_app)``.

Exit status: 0 provenance found and consistent; 1 no provenance found; 2 the file is not a readable image;
3 provenance found but contradicting itself (watermark id differs from the metadata, or an invalid C2PA signature).
"""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(add_completion=False, help="Image provenance.")


@app.command("verify")
def verify_command(
    image: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True, help="An image (PNG, JPEG, ...)."),
    key: str | None = typer.Option(None, help="Watermark key, if the operator set a private one."),
    trust_anchors: Path | None = typer.Option(
        None, exists=True, dir_okay=False, help="PEM root certificates to trust as C2PA signers."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the full report as JSON."),
) -> None:
    """Read an image's provenance: metadata, invisible watermark and C2PA Content Credentials."""
    from serving.safety.images import ImageDecodeError
    from serving.safety.provenance import ProvenanceConfig, verify
    from serving.safety.watermark import WatermarkConfig

    config = ProvenanceConfig(watermark=WatermarkConfig(key=key) if key else WatermarkConfig(),
                              trust_anchors=trust_anchors)
    try:
        report = verify(image.read_bytes(), config)
    except ImageDecodeError as exc:
        typer.echo(f"error: {image}: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(report.model_dump_json(indent=2, by_alias=True) if as_json else "\n".join(report.lines()))
    contradicted = report.watermark_matches_record is False or (report.c2pa.present and not report.c2pa.valid)
    raise typer.Exit(3 if contradicted else 0 if report.found else 1)
