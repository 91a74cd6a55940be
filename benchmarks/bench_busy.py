"""How busy a campaign keeps the renderer, at growing intent concurrency (CPU, the real Serve app and LLM).

The renderer is the real ``DiffusionEngine`` (batching, busy accounting, encoder pool) in the real
``DiffusionDeployment``, over a pipeline that takes a fixed ``--batch-seconds`` per call whatever the batch size: the
cost shape of a GPU renderer (a batch of 8 costs about what a batch of 1 does), without its CPU use, so the two cores
stay with the LLM. The rewriter and critic are the tiny preset's real vLLM engine. The Serve app (ingress, diffusion,
LLM) starts once; then one campaign per row, over HTTP, at intent concurrency 1, 2, 4, 8 and the one the app derives
from the renderer's capacity (no ``concurrency`` in the request). Each row runs ``--waves`` x its concurrency intents,
so that start-up and the last intents' tail weigh the same in every row.

Busy fraction = the replica's ``busy_seconds`` added during the campaign / the campaign's wall time (its status's
``finished_at - started_at``). Goal: >= 0.9 once concurrency suffices.

    .venv/bin/python -m benchmarks.bench_busy [--waves 3] [--batch-seconds 6] [--side 512] [--smoke] [--record]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from serving.engines import DiffusionEngine

SECONDS_ENV = "PROMPTBEAM_BENCH_BATCH_SECONDS"
"""The fixed cost per pipeline call, handed to the Serve replica through its environment (Ray workers inherit the
driver's)."""
ENGINE = "benchmarks.bench_busy:FixedCostDiffusionEngine"
SEARCH = {"rounds": 2, "beam_width": 2, "candidates_per_beam": 2, "seeds_per_prompt": 1, "max_images": 8,
          "steps": 1, "width": 64, "height": 64, "guidance_scale": 0.0}
TEXTS = ["a red apple on a wooden table", "two cats on a blue sofa", "a lighthouse at sunset",
         "a bowl of ramen, overhead shot", "a fox in a snowy forest", "a green bicycle by a wall"]


class FixedCostPipeline:
    """Stands in for a diffusers pipeline's ``__call__``: images of noise, seeded by the callers' generators, after
    ``seconds`` whatever the batch size. Everything else (tokenizers, modules, ``to``) is the real pipeline's."""

    def __init__(self, pipe, seconds: float):
        self._pipe = pipe
        self._seconds = seconds

    def __getattr__(self, name):
        return getattr(self._pipe, name)

    def __call__(self, *, generator, width: int, height: int, **_):
        import torch

        t0 = time.perf_counter()
        images = torch.stack([torch.rand(3, height, width, generator=g) for g in generator])
        time.sleep(max(0.0, self._seconds - (time.perf_counter() - t0)))  # sleeping releases the GIL, as a GPU does
        return SimpleNamespace(images=images)


class FixedCostDiffusionEngine(DiffusionEngine):
    """The real engine over :class:`FixedCostPipeline` (the tiny model's tokenizers and info stay real)."""

    def __init__(self, config):
        super().__init__(config)
        self.pipe = FixedCostPipeline(self.pipe, float(os.environ.get(SECONDS_ENV, "1.0")))


def intents(n: int, tag: str) -> list[dict]:
    return [{"id": f"{tag}{k}", "text": TEXTS[k % len(TEXTS)] + f", variant {k}"} for k in range(n)]


def run_rows(tiny_dir: Path, store: Path, waves: int, concurrencies: list[int | None]) -> list[list]:
    import ray
    from ray import serve

    from pipelines.app import AppConfig, EngineClasses, compose_app
    from pipelines.campaign import intent_concurrency
    from pipelines.client import CampaignClient
    from pipelines.records import CampaignSpec
    from pipelines.server.local import free_port

    port = free_port()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    rows = []
    try:
        config = AppConfig(preset="tiny", tiny_dir=str(tiny_dir), store_root=str(store),
                           engines=EngineClasses(diffusion=ENGINE))
        serve.run(compose_app(config), name="busy")
        handle = serve.get_deployment_handle("diffusion", app_name="busy")
        # what the app derives when a request names no concurrency (the same function, the same capacity)
        derived = intent_concurrency(CampaignSpec(intents=intents(1, "x"), search=SEARCH).search_config(),
                                     handle.capacity.remote().result())
        with CampaignClient(f"http://127.0.0.1:{port}", timeout_s=120) as client:
            for k, concurrency in enumerate(concurrencies):
                n_intents = waves * (concurrency or derived)
                spec = CampaignSpec(name=f"busy-{k}", intents=intents(n_intents, f"c{k}-"), search=SEARCH,
                                    concurrency=concurrency)  # None: the app derives it
                busy_before = handle.busy_seconds.remote().result()
                accepted = client.submit(spec)
                st = client.wait(accepted.id, interval_s=0.1)
                assert st.state == "done", st.errors
                assert accepted.concurrency == (concurrency or derived)
                busy = handle.busy_seconds.remote().result() - busy_before
                wall = st.finished_at - st.started_at
                label = str(accepted.concurrency) if concurrency is not None else \
                    f"{accepted.concurrency} (from capacity)"
                calls = round(busy / float(os.environ[SECONDS_ENV]))  # each call takes the fixed cost
                rows.append([label, n_intents, st.images_rendered, wall, busy, busy / wall,
                             st.images_rendered / max(calls, 1), st.images_rendered / wall])
                print("| " + " | ".join(str(c) for c in rows[-1]) + " |", flush=True)
    finally:
        serve.shutdown()
        ray.shutdown()
    return rows


def main() -> None:
    from benchmarks._util import add_record_options, report
    from serving.tiny_models import make_tiny_models

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--waves", type=int, default=3, help="intents per campaign = waves x its concurrency")
    ap.add_argument("--batch-seconds", type=float, default=6.0, help="fixed cost of one pipeline call")
    ap.add_argument("--concurrency", default="1,2,4,8", help="rows besides the capacity-derived one")
    ap.add_argument("--smoke", action="store_true", help="CI: 1 wave, 0.2 s per call, rows 1 and derived")
    ap.add_argument("--side", type=int, default=64, help="image width and height (the renderer's cost stays fixed; "
                    "encoding, critic copies and store writes grow with it)")
    ap.add_argument("--tiny-dir", type=Path, default=None)
    add_record_options(ap)
    args = ap.parse_args()
    if args.smoke:
        args.waves, args.batch_seconds, args.concurrency = 1, 0.2, "1"
    os.environ[SECONDS_ENV] = str(args.batch_seconds)
    SEARCH.update(width=args.side, height=args.side)
    concurrencies: list[int | None] = [int(c) for c in args.concurrency.split(",") if c] + [None]
    tiny_dir = args.tiny_dir or Path(tempfile.mkdtemp()) / "tiny"
    make_tiny_models(tiny_dir)
    with tempfile.TemporaryDirectory() as store:
        rows = run_rows(tiny_dir, Path(store), args.waves, concurrencies)
    report(
        "Renderer busy fraction in a campaign (CPU, fixed-cost renderer, tiny vLLM)"
        + ("" if args.side == 64 else f", {args.side}² images"),
        ["intent concurrency", "intents", "images", "wall s", "busy s", "busy fraction", "images per call",
         "images/s"],
        rows,
        notes=f"renderer: the real engine and deployment, {args.batch_seconds} s per pipeline call whatever the batch "
        f"size (max_batch_size 16, the tiny preset's); LLM: the tiny preset's vLLM; search: {SEARCH}, baseline on "
        "every intent; "
        "busy fraction = busy_seconds added / campaign wall time; goal: >= 0.9 once concurrency suffices",
        record=args.record,
    )


if __name__ == "__main__":
    main()
