"""Where a campaign's control-plane CPU goes, with and without planner workers (the real Serve app over HTTP, zero-cost
engines).

The same campaign runs in three arms of the Serve app (``pipelines.server.builder.compose_app``), one after another on
one local Ray: **in the ingress** (``AppConfig(planner_workers=False)``: the ingress replica searches every intent
itself), and with the ``planner`` deployment at **1** and **2 replicas** (``planner_workers=True``, autoscaling
pinned at min = max = initial = k, ``num_cpus`` 0; the ingress hands each intent to a worker and folds what comes back;
docs/architecture.md, "Where a campaign's work runs"). Every arm: the same ``--intents`` intents, the same search
(2 rounds, beam 2 x 2 candidates, 1 seed per prompt, at most 8 images per intent, no baseline) and the same fixed intent
``--concurrency``, after a short unmeasured warm-up campaign on the freshly deployed app.

What each component is and costs:

- **renderer**: :class:`ZeroCostDiffusionEngine` in the real ``DiffusionDeployment`` (``@serve.batch``, up to 16 per
  call): :class:`pipelines.testing.fakes.FakeRenderer`'s 8x8 PNGs, no model, no sleep; the campaign gets the bytes back
  and writes them to the store itself;
- **LLM**: :class:`ZeroCostLLMEngine` in the real ``LLMDeployment``: :class:`pipelines.testing.fakes.ScriptedLLM`
  answers the rewriter's proposals and the critic's questions and scores (it reads the prompt and seed that the fake
  renderer wrote into the PNG), at once;
- so every CPU second measured is the serving and campaign layers': the ingress (HTTP, the runner, in the first arm the
  search), the planner replicas (the search: prompts, parsing, selection, image writes, checkpoints, the commit),
  the two engine replicas (Serve's request handling around a free model), Serve's proxy and controller, and Ray's own
  processes (GCS, raylet, idle workers).

Measured per arm: images/s = the status's ``images_rendered / (finished_at - started_at)``; CPU ms per image of each
process of the app (``psutil`` user + system time before and after the campaign; replica pids from Ray's actor table,
``ray._private.state.actors()``, so the dashboard need not run and take CPU of its own); "cores busy" = every process's
CPU seconds / wall seconds; and the latency of ``GET /v1/campaigns/{id}`` sampled every 0.25 s in a thread while the
campaign runs (what a user watching it waits; the ingress's event loop answers it). The notes give 2 workers' images/s
over 1 worker's. On a machine with few cores the figure is bounded by the cores: the CPU split shows by what.

    flock /tmp/promptbeam-heavy.lock timeout 1500 \\
        .venv/bin/python -m benchmarks.bench_planner_workers [--intents 200] [--concurrency 32] [--smoke] [--record]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from concurrent.futures import Future
from pathlib import Path

from agents.messages import ChatRequest, ChatResult, RendererInfo, RenderRequest, RenderResult
from pipelines.testing.fakes import FakeRenderer, ScriptedLLM
from serving.engines.diffusion import PendingRender, PipelineCall

ENGINES = {"diffusion": "benchmarks.bench_planner_workers:ZeroCostDiffusionEngine",
           "llm": "benchmarks.bench_planner_workers:ZeroCostLLMEngine"}
SEARCH = {"rounds": 2, "beam_width": 2, "candidates_per_beam": 2, "seeds_per_prompt": 1, "max_images": 8,
          "run_baseline": False}
TEXTS = ["a red apple on a wooden table", "two cats on a blue sofa", "a lighthouse at sunset",
         "a bowl of ramen, overhead shot", "a fox in a snowy forest", "a green bicycle by a wall"]
ARMS = [("in the ingress", 0), ("1 planner worker", 1), ("2 planner workers", 2)]
ROLES = ["ingress", "planner", "diffusion", "llm", "serve", "ray", "client"]
"""Columns of the CPU split: the app's four deployments, Serve's proxy + controller, Ray's other processes, and this
script (the HTTP client and the status sampler)."""


def _finish(coro):
    """The value of a coroutine that never suspends (FakeRenderer.render awaits nothing), without an event loop: the
    engine runs in the deployment's worker thread, where asyncio.run would build and tear down a loop per batch."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise RuntimeError("the coroutine suspended")


class ZeroCostDiffusionEngine:
    """The diffusion engine's interface (``start_render`` -> :class:`PendingRender`, ``info``, ``count_tokens``,
    ``check_health``, ``shutdown``) over :class:`FakeRenderer`: every image is ready when the call returns."""

    def __init__(self, config):
        self.config = config
        self._renderer = FakeRenderer(keep_calls=False)

    def start_render(self, requests: list[RenderRequest]) -> PendingRender:
        t0 = time.perf_counter()
        results: list[RenderResult] = _finish(self._renderer.render(requests))
        futures = []
        for result in results:
            future: Future = Future()
            future.set_result(result)
            futures.append(future)
        calls = [PipelineCall(batch_size=len(requests), padded_size=len(requests),
                              seconds=time.perf_counter() - t0)] if requests else []
        return PendingRender(futures=futures, calls=calls)

    def info(self) -> RendererInfo:
        return RendererInfo(model=self.config.model, max_prompt_tokens=77, tokenizer="words+2")

    def count_tokens(self, prompts: list[str]) -> list[int]:
        return [len(p.split()) + 2 for p in prompts]

    def check_health(self) -> None:
        pass

    def shutdown(self) -> None:
        pass


class ZeroCostLLMEngine:
    """The LLM engine's interface (async ``chat``, ``check_health``, ``shutdown``) over :class:`ScriptedLLM`."""

    def __init__(self, config):
        self.config = config
        self._llm = ScriptedLLM(keep_requests=False)

    async def chat(self, request: ChatRequest) -> ChatResult:
        return await self._llm.chat(request)

    async def check_health(self) -> None:
        pass

    def shutdown(self) -> None:
        pass


def write_preset(directory: Path) -> Path:
    """A preset file (presets can be paths) naming no real model: the engines above read nothing from it."""
    import yaml

    path = directory / "zero-cost.yaml"
    path.write_text(yaml.safe_dump({
        "description": "zero-cost engines for the planner-worker benchmark",
        "diffusion": {"model": "zero-cost-renderer", "device": "cpu", "max_batch_size": 16},
        "llm": {"model": "zero-cost-llm"},
        "defaults": {"width": 64, "height": 64, "steps": 2, "guidance_scale": 0.0},
        "batch_seconds": 1,
    }))
    return path


def intents(n: int, tag: str) -> list[dict]:
    return [{"id": f"{tag}{k}", "text": TEXTS[k % len(TEXTS)] + f", variant {k}"} for k in range(n)]


# ------------------------------------------------------------------------------------------------------------------
# Which process is which, and what CPU each spent
# ------------------------------------------------------------------------------------------------------------------


def role_of_pids(app: str) -> dict[int, str]:
    """pid -> role for the live actors of Serve and of app ``app``, from Ray's actor table (GCS; no dashboard)."""
    from ray._private.state import actors

    roles = {}
    for info in actors().values():
        if info["State"] != "ALIVE" or not info["Pid"]:
            continue
        name = info["ActorClassName"]
        if name.startswith(f"ServeReplica:{app}:"):
            roles[info["Pid"]] = name.rsplit(":", 1)[1]
        elif name in ("ServeController", "ProxyActor"):
            roles[info["Pid"]] = "serve"
    return roles


def cpu_snapshot(roles: dict[int, str]) -> dict[int, tuple[str, float]]:
    """pid -> (role, user + system CPU seconds) for this process, the app's actors and every other process this one
    started (Ray's GCS, raylet and workers: role 'ray')."""
    import psutil

    me = psutil.Process()
    procs = {me.pid: me, **{p.pid: p for p in me.children(recursive=True)}}
    for pid in roles:
        if pid not in procs:
            try:
                procs[pid] = psutil.Process(pid)
            except psutil.NoSuchProcess:
                pass
    out = {}
    for pid, proc in procs.items():
        try:
            t = proc.cpu_times()
        except psutil.Error:
            continue
        out[pid] = ("client" if pid == me.pid else roles.get(pid, "ray"), t.user + t.system)
    return out


def cpu_by_role(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]
                ) -> tuple[dict[str, float], list[float]]:
    """(CPU seconds spent between the snapshots per role, per planner replica); a process started meanwhile counts
    in full."""
    spent = dict.fromkeys(ROLES, 0.0)
    planners = []
    for pid, (role, seconds) in after.items():
        delta = max(0.0, seconds - before.get(pid, (role, 0.0))[1])
        spent[role] += delta
        if role == "planner":
            planners.append(delta)
    return spent, sorted(planners, reverse=True)


# ------------------------------------------------------------------------------------------------------------------
# One arm: deploy, warm up, one measured campaign, status latency sampled meanwhile
# ------------------------------------------------------------------------------------------------------------------


class StatusSampler(threading.Thread):
    """GET the campaign's status every ``interval_s`` until it is no longer running; keeps each GET's latency."""

    def __init__(self, url: str, campaign_id: str, interval_s: float = 0.25):
        super().__init__(name="status-sampler", daemon=True)
        self.url, self.campaign_id, self.interval_s = url, campaign_id, interval_s
        self.latencies: list[float] = []
        self.final = None
        self.error: BaseException | None = None

    def run(self) -> None:
        import httpx

        from pipelines.wire import CampaignStatus

        try:
            with httpx.Client(base_url=self.url, timeout=120) as http:
                while True:
                    t0 = time.perf_counter()
                    response = http.get(f"/v1/campaigns/{self.campaign_id}")
                    self.latencies.append(time.perf_counter() - t0)
                    response.raise_for_status()
                    status = CampaignStatus.model_validate_json(response.content)
                    if status.state != "running":
                        self.final = status
                        return
                    time.sleep(max(0.0, self.interval_s - (time.perf_counter() - t0)))
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            self.error = exc


def run_arm(base_url: str, preset: Path, store: Path, app: str, workers: int, n_intents: int, warmup: int,
            concurrency: int) -> dict:
    from ray import serve

    from pipelines.app import AppConfig, EngineClasses, compose_app
    from pipelines.client import CampaignClient
    from pipelines.records import CampaignSpec

    config = AppConfig(preset=str(preset), store_root=str(store), engines=EngineClasses(**ENGINES),
                       planner_workers=workers > 0)
    deployments: dict[str, dict] = {}
    if workers:
        deployments["planner"] = {"autoscaling_config": {"min_replicas": workers, "initial_replicas": workers,
                                                         "max_replicas": workers},
                                  "ray_actor_options": {"num_cpus": 0}}
    serve.run(compose_app(config, deployments), name=app, route_prefix=f"/{app}")
    url = f"{base_url}/{app}"
    try:
        roles = role_of_pids(app)
        found = sorted(roles.values())
        assert found.count("planner") == workers and {"ingress", "diffusion", "llm"} <= set(found), found
        with CampaignClient(url, timeout_s=120) as client:
            if warmup:  # first calls through fresh replicas and handles: not measured
                spec = CampaignSpec(name=f"{app}-warmup", intents=intents(warmup, "w"), search=SEARCH,
                                    concurrency=concurrency)
                done = client.wait(client.submit(spec).id, interval_s=0.25)
                assert done.state == "done", done.errors
            spec = CampaignSpec(name=app, intents=intents(n_intents, "i"), search=SEARCH, concurrency=concurrency)
            before = cpu_snapshot(roles)
            accepted = client.submit(spec)
            sampler = StatusSampler(url, accepted.id)
            sampler.start()
            sampler.join()
            after = cpu_snapshot(roles)
        if sampler.error is not None:
            raise sampler.error
        st = sampler.final
        assert st.state == "done" and st.intents_done == n_intents, (st.state, st.intents_done, st.errors)
        assert accepted.concurrency == concurrency, accepted.concurrency
        spent, planners = cpu_by_role(before, after)
        wall = st.finished_at - st.started_at
        q = statistics.quantiles(sampler.latencies, n=20, method="inclusive")
        return {"images": st.images_rendered, "wall": wall, "rate": st.images_rendered / wall, "cpu": spent,
                "planners": planners, "get_p50": 1000 * statistics.median(sampler.latencies),
                "get_p95": 1000 * q[18], "gets": len(sampler.latencies)}
    finally:
        serve.delete(app)


def run_arms(n_intents: int, warmup: int, concurrency: int) -> list[tuple[str, int, dict]]:
    import ray
    from ray import serve

    from pipelines.server.local import free_port

    port = free_port()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    out = []
    try:
        with tempfile.TemporaryDirectory() as d:
            preset = write_preset(Path(d))
            for k, (label, workers) in enumerate(ARMS):
                r = run_arm(f"http://127.0.0.1:{port}", preset, Path(d) / f"store{k}", f"arm{k}", workers,
                            n_intents, warmup, concurrency)
                out.append((label, workers, r))
                print(f"{label}: {r['images']} images in {r['wall']:.1f} s, {r['rate']:.1f} images/s, "
                      f"CPU s {({k: round(v, 1) for k, v in r['cpu'].items()})}, planners {r['planners']}, "
                      f"status GET p50/p95 {r['get_p50']:.0f}/{r['get_p95']:.0f} ms", flush=True)
    finally:
        serve.shutdown()
        ray.shutdown()
    return out


def main() -> None:
    from benchmarks._util import add_record_options, report

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--intents", type=int, default=200, help="intents of the measured campaign, in every arm")
    ap.add_argument("--concurrency", type=int, default=32, help="intents searched at once, in every arm")
    ap.add_argument("--warmup", type=int, default=32,
                    help="intents of the unmeasured campaign before each arm's (enough to reach every worker)")
    ap.add_argument("--smoke", action="store_true", help="CI: 20 intents, 8 warm-up")
    add_record_options(ap)
    args = ap.parse_args()
    if args.smoke:
        args.intents, args.warmup = 20, 8
    cores = len(os.sched_getaffinity(0))
    results = run_arms(args.intents, args.warmup, args.concurrency)

    def ms(seconds: float, images: int) -> str:
        return f"{1000 * seconds / max(images, 1):.1f}"

    rows = []
    for label, workers, r in results:
        cpu, n = r["cpu"], r["images"]
        planners = ms(cpu["planner"], n) if workers <= 1 else \
            f"{ms(cpu['planner'], n)} ({' + '.join(ms(s, n) for s in r['planners'])})"
        total = sum(cpu.values())
        rows.append([label, args.intents, n, f"{r['wall']:.1f}", f"{r['rate']:.1f}",
                     f"{r['get_p50']:.0f} / {r['get_p95']:.0f}", ms(cpu["ingress"], n), planners,
                     ms(cpu["diffusion"], n), ms(cpu["llm"], n), ms(cpu["serve"], n), ms(cpu["ray"], n),
                     ms(cpu["client"], n), ms(total, n), f"{total / r['wall']:.2f}"])
    rate = {workers: r["rate"] for _, workers, r in results}
    busy = {workers: sum(r["cpu"].values()) / r["wall"] for _, workers, r in results}
    ratio = rate[2] / rate[1]
    print(f"images/s, 2 planner workers / 1: {ratio:.2f}", flush=True)
    names = {"ingress": "the ingress", "planner": "the planner workers", "diffusion": "the diffusion replica",
             "llm": "the LLM replica", "serve": "Serve's proxy and controller", "ray": "Ray's other processes"}
    top = {workers: names[max(names, key=lambda k: r["cpu"][k])] for _, workers, r in results}
    if max(busy.values()) >= 0.85 * cores:
        bound = (f"On this {cores}-core machine images/s is bounded by the cores: all processes (the app's, Ray's, "
                 f"this client) kept {busy[0]:.2f}, {busy[1]:.2f} and {busy[2]:.2f} of {cores} cores busy (in the "
                 "ingress, 1 worker, 2 workers): a second worker brings no CPU to spend, only one more process to "
                 "spend it in. "
                 f"Largest CPU per image: {top[0]} in the ingress arm, {top[1]} with 1 worker, {top[2]} with 2; "
                 "the diffusion and LLM replicas' share is Serve's request handling around a free model, which "
                 "real engines would pay on top of their model.")
    else:
        bound = (f"The cores were not saturated ({busy[0]:.2f}, {busy[1]:.2f} and {busy[2]:.2f} of {cores} busy in "
                 f"the three arms): latency through the app, not this machine's CPU, bounds images/s here.")
    report(
        f"Planner workers vs the ingress, zero-cost engines ({args.intents} intents, concurrency "
        f"{args.concurrency}, CPU)",
        ["arm", "intents", "images", "wall s", "images/s", "status GET p50 / p95 ms", "ingress", "planners",
         "diffusion", "llm", "Serve proxy+controller", "Ray other", "client", "all", "cores busy"],
        rows,
        notes=f"Images/s with 2 planner workers / 1 worker: **{ratio:.2f}**. {bound} "
              "Columns 'ingress' to 'all': CPU ms per image (user + system) of each process during the measured "
              "campaign; 'planners' with 2 workers: the sum (each replica). Engines: zero-cost fakes in the real "
              "deployments (FakeRenderer 8x8 PNGs, ScriptedLLM rewriter and critic); the campaign writes the images. "
              f"Search {SEARCH}, concurrency {args.concurrency} in every arm, a {args.warmup}-intent warm-up campaign "
              "before each; status GET sampled every 0.25 s during the campaign. "
              "`python -m benchmarks.bench_planner_workers`.",
        record=args.record,
    )


if __name__ == "__main__":
    main()
