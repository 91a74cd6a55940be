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

from pipelines.world.cli import world_app

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Iterative prompt refinement for text-to-image.")
models_app = typer.Typer(no_args_is_help=True, help="Model files.")
app.add_typer(models_app, name="models")
app.add_typer(world_app, name="world")
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
    from pipelines.store import CampaignStore

    (out / "images").mkdir(parents=True, exist_ok=True)
    for res in (result, baseline):
        for cid, png in res.images.items():
            (out / "images" / CampaignStore.image_name(cid)).write_bytes(png)
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


# ---------------------------------------------------------------------------------------------------------------------
# Campaigns through the Serve app
# ---------------------------------------------------------------------------------------------------------------------


def _load_spec(campaign: Path, name: str | None, profile: str | None, search: dict, concurrency: int):
    """Read a JSONL campaign file into a CampaignSpec; exit 2 with the reason on bad input."""
    from pydantic import ValidationError

    from pipelines.campaign import CampaignSpec

    if not campaign.is_file():
        console.print(f"[red]error:[/red] campaign file {str(campaign)!r} does not exist")
        raise typer.Exit(2)
    try:
        return CampaignSpec(name=name or _safe_id(campaign.stem), intents_jsonl=campaign.read_text(),
                            search={k: v for k, v in search.items() if v is not None}, profile=profile,
                            concurrency=concurrency)
    except (ValidationError, ValueError) as exc:
        console.print(f"[red]error:[/red] {campaign}: {exc}")
        raise typer.Exit(2) from exc


def _safe_id(stem: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_.\-]", "-", stem)[:100] or "campaign"


def _submit_and_wait(endpoint: str, spec, wait: bool = True) -> dict:
    """POST the campaign, then follow its status with a progress bar until it ends. Ctrl-C cancels it."""
    import time

    import httpx
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    endpoint = endpoint.rstrip("/")
    with httpx.Client(timeout=60) as client:
        resp = client.post(f"{endpoint}/v1/campaigns", content=spec.model_dump_json(exclude_none=True),
                           headers={"content-type": "application/json"})
        if resp.status_code >= 400:
            console.print(f"[red]error {resp.status_code}:[/red] {resp.text}")
            raise typer.Exit(1)
        accepted = resp.json()
        console.print(f"campaign [bold]{accepted['id']}[/bold]: {accepted['intents']} intents"
                      f" ({accepted['resumed_intents']} already finished)")
        if not wait:
            return accepted
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                   TimeElapsedColumn())
        with Progress(*columns, console=console) as progress:
            task = progress.add_task("intents", total=accepted["intents"], info="")
            try:
                while True:
                    st = client.get(f"{endpoint}/v1/campaigns/{accepted['id']}").json()
                    done = st["intents_done"] + st["intents_rejected"]
                    best = st["mean_best_score"]
                    progress.update(task, completed=done, info=f"{st['images_rendered']} images"
                                    + (f", mean best {best:.3f}" if best is not None else ""))
                    if st["state"] != "running":
                        return st
                    time.sleep(1.0)
            except KeyboardInterrupt:
                client.delete(f"{endpoint}/v1/campaigns/{accepted['id']}")
                console.print("cancelled; run the same command again to resume")
                raise typer.Exit(130)


def _start_local_serve(profile: str, store_root: Path, port: int, host: str = "127.0.0.1"):
    import ray
    from ray import serve

    from pipelines.app import AppConfig, build_app

    ray.init(num_cpus=max(2, os.cpu_count() or 2), include_dashboard=False, log_to_driver=False,
             configure_logging=True, logging_level="WARNING")
    serve.start(http_options={"host": host, "port": port})
    serve.run(build_app(AppConfig(profile=profile, store_root=str(store_root))), name="promptbeam")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@app.command()
def run(
    campaign: Path = typer.Argument(..., help="JSONL file: one intent per line ({\"id\": ..., \"text\": ...})."),
    out: Path = typer.Option(Path("runs"), help="Store root; the campaign is written to OUT/NAME/."),
    name: str = typer.Option(None, help="Campaign name (default: the file's stem). Same name + same file = resume."),
    profile: str = typer.Option("tiny", help="'tiny' (offline CPU, built on the fly) or 'gpu'."),
    rounds: int = typer.Option(None, min=1), beam_width: int = typer.Option(None, min=1),
    candidates_per_beam: int = typer.Option(None, min=1), seeds_per_prompt: int = typer.Option(None, min=1),
    max_images: int = typer.Option(None, min=1), seed: int = typer.Option(None, min=0, help="Base seed."),
    concurrency: int = typer.Option(4, min=1, help="Intents searched at once."),
    port: int = typer.Option(0, help="HTTP port of the local Serve app (0: any free port)."),
) -> None:
    """The embedded default: start a local Ray, deploy the Serve app, run the campaign through its HTTP endpoint,
    write the store and report.html."""
    search = {"rounds": rounds, "beam_width": beam_width, "candidates_per_beam": candidates_per_beam,
              "seeds_per_prompt": seeds_per_prompt, "max_images": max_images, "base_seed": seed}
    spec = _load_spec(campaign, name, profile, search, concurrency)
    port = port or _free_port()
    from ray import serve

    with console.status("starting Ray Serve (diffusion + LLM deployments)"):
        _start_local_serve(profile, out, port)
    try:
        status = _submit_and_wait(f"http://127.0.0.1:{port}", spec)
    finally:
        serve.shutdown()
        import ray

        ray.shutdown()
    _finish_report(out / spec.campaign_id(), status)


def _finish_report(campaign_dir: Path, status: dict | None = None) -> None:
    from pipelines.report import write_report
    from pipelines.store import CampaignStore

    store = CampaignStore(str(campaign_dir))
    path = write_report(store)
    table = Table(title=f"campaign {campaign_dir.name}")
    for col in ("intent", "best", "baseline", "Δ", "images", "stop"):
        table.add_column(col)
    manifest = store.read_manifest() or {}
    def fmt(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f}"

    for r in store.iter_results(manifest.get("intent_ids", [])):
        table.add_row(r["intent_id"], fmt(r.get("best_score")), fmt(r.get("baseline_best_score")),
                      fmt(r.get("improvement")), str(r.get("images", 0)), r.get("stop_reason", r["status"]))
    Console().print(table)
    if status:
        console.print(f"state: {status['state']}; {status['intents_done']} done, {status['intents_failed']} failed, "
                      f"{status['intents_rejected']} rejected; {status['images_rendered']} images")
    console.print(f"results: {campaign_dir}/results.jsonl  lineage: {campaign_dir}/lineage.jsonl  report: {path}")


@app.command("serve")
def serve_cmd(
    profile: str = typer.Option("tiny"), store: Path = typer.Option(Path("runs/serve"), help="Store root."),
    port: int = typer.Option(8000), host: str = typer.Option("127.0.0.1", help="0.0.0.0 to listen on all interfaces."),
) -> None:
    """Start the Serve app locally and keep it running (Ctrl-C stops it)."""
    import time

    from ray import serve

    _start_local_serve(profile, store, port, host)
    console.print(f"serving on http://{host}:{port}  (OpenAPI: /docs)")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        serve.shutdown()


@app.command()
def submit(
    campaign: Path = typer.Argument(...), endpoint: str = typer.Option(..., help="e.g. http://head:8000"),
    name: str = typer.Option(None), wait: bool = typer.Option(False, help="Follow progress until it ends."),
    concurrency: int = typer.Option(8, min=1),
) -> None:
    """Submit a campaign to a running endpoint."""
    spec = _load_spec(campaign, name, None, {}, concurrency)
    result = _submit_and_wait(endpoint, spec, wait=wait)
    Console().print_json(json.dumps(result))


@app.command()
def status(campaign_id: str, endpoint: str = typer.Option("http://127.0.0.1:8000")) -> None:
    """Print a campaign's status."""
    import httpx

    resp = httpx.get(f"{endpoint.rstrip('/')}/v1/campaigns/{campaign_id}", timeout=30)
    if resp.status_code >= 400:
        console.print(f"[red]error {resp.status_code}:[/red] {resp.text}")
        raise typer.Exit(1)
    Console().print_json(resp.text)


@app.command()
def report(campaign_dir: Path = typer.Argument(..., help="A campaign directory (OUT/NAME).")) -> None:
    """(Re)write CAMPAIGN_DIR/report.html and print the summary."""
    if not (campaign_dir / "manifest.json").is_file():
        console.print(f"[red]error:[/red] {campaign_dir} holds no campaign (no manifest.json)")
        raise typer.Exit(2)
    _finish_report(campaign_dir)


def main() -> None:  # pragma: no cover - console script entry
    logging.basicConfig(level=os.environ.get("PROMPTBEAM_LOG", "WARNING"))
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
