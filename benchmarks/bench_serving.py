"""Serving overhead and dynamic batching on CPU with the tiny models.

1. Serving overhead: the same campaign (fixed intents and search config) run (a) through the Serve app over HTTP, as
   users run it, and (b) by the campaign runner calling the engines in-process. Reports images/s and (a)/(b).
2. Dynamic batching: N concurrent single-image requests to the diffusion deployment vs one in-process batch of N.
   Reports the ratio (in-process time / served time) and the batch sizes the deployment formed.

With ``--profile``: the CPU seconds each process spent during each campaign (from /proc, Linux), to see where the
served side's extra time goes.

    .venv/bin/python -m benchmarks.bench_serving [--intents 6] [--n 8] [--profile] [--record]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks._util import add_record_options, report

SEARCH = {"rounds": 2, "beam_width": 2, "candidates_per_beam": 2, "seeds_per_prompt": 1, "max_images": 8,
          "steps": 2, "width": 64, "height": 64, "guidance_scale": 0.0}


def process_cpu_seconds() -> dict[int, tuple[str, float]]:
    """pid -> (command, CPU seconds in user + system mode) for every process this user can read (/proc, Linux)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            argv = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # from field 3 (state) on: utime and stime are fields 14, 15
        name = argv[0].decode(errors="replace") if argv and argv[0] else stat[stat.index("(") : stat.rindex(")") + 1]
        if not name.startswith("ray::"):
            name = " ".join(a.decode(errors="replace").rsplit("/", 1)[-1] for a in argv[:4] if a)[:60]
        out[int(d.name)] = (name, (int(fields[11]) + int(fields[12])) / tick)
    return out


def cpu_by_process(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds spent between two snapshots, summed per command (processes started meanwhile count in full)."""
    spent: dict[str, float] = {}
    for pid, (name, seconds) in after.items():
        delta = seconds - before.get(pid, (name, 0.0))[1]
        if delta > 0:
            spent[name] = spent.get(name, 0.0) + delta
    return spent


def intents(n: int) -> list[dict]:
    texts = ["a red apple on a wooden table", "two cats on a blue sofa", "a lighthouse at sunset",
             "a bowl of ramen, overhead shot", "a fox in a snowy forest", "a green bicycle by a wall"]
    return [{"id": f"b{k}", "text": texts[k % len(texts)] + f", variant {k}"} for k in range(n)]


async def in_process(tiny_dir: Path, n_intents: int, store_dir: Path) -> tuple[float, int, dict[str, float]]:
    from pipelines.campaign import CampaignRunner
    from pipelines.records import CampaignSpec
    from pipelines.store import CampaignStore
    from serving.clients import LocalLanguageModel, LocalRenderer
    from serving.engines import DiffusionEngine, LLMEngine
    from serving.presets import load_preset

    prof = load_preset("tiny", tiny_dir)
    diffusion, llm = DiffusionEngine(prof.diffusion), LLMEngine(prof.llm)
    try:
        spec = CampaignSpec(name="bench", intents=intents(n_intents), search=SEARCH, concurrency=4)
        runner = CampaignRunner(spec, spec.search_config(), LocalRenderer(diffusion), LocalLanguageModel(llm),
                                CampaignStore(str(store_dir)))
        cpu, t0 = process_cpu_seconds(), time.perf_counter()
        status = await runner.run()
        return time.perf_counter() - t0, status.images_rendered, cpu_by_process(cpu, process_cpu_seconds())
    finally:
        llm.shutdown()


def served(tiny_dir: Path, n_intents: int, store_dir: Path, n_burst: int):
    import ray
    from ray import serve

    from agents.messages import RenderRequest
    from pipelines.app import AppConfig, compose_app
    from pipelines.client import CampaignClient
    from pipelines.records import CampaignSpec
    from pipelines.server.local import free_port
    from serving.engines import DiffusionEngine
    from serving.presets import load_preset

    port = free_port()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        batching = {"user_config": {"max_batch_size": n_burst, "batch_wait_timeout_s": 0.1}}
        serve.run(compose_app(AppConfig(preset="tiny", tiny_dir=str(tiny_dir), store_root=str(store_dir)),
                            deployments={"diffusion": batching}), name="promptbeam")
        # 1. the campaign over HTTP
        spec = CampaignSpec(name="bench", intents=intents(n_intents), search=SEARCH, concurrency=4)
        with CampaignClient(f"http://127.0.0.1:{port}") as client:
            cpu, t0 = process_cpu_seconds(), time.perf_counter()
            st = client.wait(client.submit(spec).id, interval_s=0.2)
            seconds = time.perf_counter() - t0
            cpu = cpu_by_process(cpu, process_cpu_seconds())
        # 2. batching: N concurrent single-image calls vs one in-process batch of N (same engine settings)
        handle = serve.get_deployment_handle("diffusion", app_name="promptbeam")
        engine = DiffusionEngine(load_preset("tiny", tiny_dir).diffusion)
        reqs = [RenderRequest(request_id=f"r{i}", prompt="a red apple", seed=i, steps=4) for i in range(n_burst)]
        engine.render(reqs)  # warm-up

        async def burst():
            return await asyncio.gather(*(handle.render.remote(r) for r in reqs))

        asyncio.run(burst())  # warm-up
        served_t, local_t, sizes = [], [], []
        for _ in range(5):
            t0 = time.perf_counter()
            out = asyncio.run(burst())
            served_t.append(time.perf_counter() - t0)
            sizes.extend(sorted({(r.render_seconds, r.batch_size) for r in out}))
            t0 = time.perf_counter()
            engine.render(reqs)
            local_t.append(time.perf_counter() - t0)
        return seconds, st.images_rendered, [statistics.median(served_t), statistics.median(local_t)], \
            [s for _, s in sizes], cpu
    finally:
        serve.shutdown()
        ray.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--intents", type=int, default=6)
    ap.add_argument("--n", type=int, default=8, help="burst size for the batching benchmark")
    ap.add_argument("--tiny-dir", type=Path, default=None)
    ap.add_argument("--profile", action="store_true", help="print CPU seconds per process during each campaign")
    add_record_options(ap)
    args = ap.parse_args()
    from serving.tiny_models import make_tiny_models

    tiny_dir = args.tiny_dir or Path(tempfile.mkdtemp()) / "tiny"
    make_tiny_models(tiny_dir)
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        local_s, local_images, local_cpu = asyncio.run(in_process(tiny_dir, args.intents, Path(a)))
        serve_s, serve_images, (burst_served, burst_local), sizes, serve_cpu = served(tiny_dir, args.intents, Path(b),
                                                                                     args.n)
    if args.profile:
        names = sorted(set(local_cpu) | set(serve_cpu), key=lambda n: -max(local_cpu.get(n, 0), serve_cpu.get(n, 0)))
        report("CPU seconds per process during the campaign", ["process", "(b) in-process", "(a) Serve"],
               [[n, local_cpu.get(n, 0.0), serve_cpu.get(n, 0.0)] for n in names if
                max(local_cpu.get(n, 0), serve_cpu.get(n, 0)) >= 0.2]
               + [["all processes", sum(local_cpu.values()), sum(serve_cpu.values())]],
               notes=f"wall: (b) {local_s:.1f} s, (a) {serve_s:.1f} s", record=False)
    local_ips, serve_ips = local_images / local_s, serve_images / serve_s
    report(
        "Serving overhead (CPU, tiny models)",
        ["path", "intents", "images", "seconds", "images/s"],
        [["(b) in-process engines", args.intents, local_images, local_s, local_ips],
         ["(a) Serve app over HTTP", args.intents, serve_images, serve_s, serve_ips],
         ["ratio (a)/(b)", "", "", "", serve_ips / local_ips]],
        notes=f"search config: {json.dumps(SEARCH)}; campaign concurrency 4; goal: ratio >= 0.8",
        record=args.record,
    )
    report(
        "Dynamic batching efficiency (CPU, tiny diffusion)",
        ["path", "images", "median seconds", "batch sizes formed"],
        [[f"{args.n} concurrent single-image calls to the deployment", args.n, burst_served, sorted(set(sizes))],
         [f"one in-process batch of {args.n}", args.n, burst_local, [args.n]],
         ["efficiency (in-process / served)", "", burst_local / burst_served, ""]],
        notes="5 repetitions after warm-up, medians; 64x64, 4 steps; goal: efficiency >= 0.8",
        record=args.record,
    )


if __name__ == "__main__":
    main()
