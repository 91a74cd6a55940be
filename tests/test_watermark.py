"""The invisible watermark: round trips at the project's sizes, stays invisible, is keyed, and reads 'absent' on
unmarked images. Robustness beyond what is asserted here is measured in benchmarks/bench_safety.py."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.testing.safety_data import decode, jpeg, png, resized, scene
from serving.safety.watermark import Watermarker, WatermarkConfig, WatermarkError

PAYLOAD = 0xC0FFEE42


@pytest.fixture(scope="module")
def wm() -> Watermarker:
    return Watermarker()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255**2 / mse))


@pytest.mark.parametrize(("width", "height"), [(64, 64), (96, 64), (64, 128), (256, 256), (512, 512), (1024, 1024)])
def test_png_round_trip_at_project_sizes(wm, width, height):
    original = scene(width, height, seed=width + height)
    marked = wm.embed(original, PAYLOAD)
    reading = wm.detect(decode(png(marked)))
    assert reading.present and reading.payload == PAYLOAD
    assert reading.confidence > 0.8
    assert psnr(original, marked) > 40.0  # invisible: the default strength is about 46 dB


def test_random_noise_images_carry_it_too(wm):
    noise = np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert wm.detect(wm.embed(noise, 7)).payload == 7


def test_unmarked_images_read_absent(wm):
    readings = [wm.detect(scene(s, seed=i)) for i, s in enumerate([64, 64, 96, 128, 256, 512] * 5)]
    assert not any(r.present for r in readings)
    assert all(r.payload is None for r in readings)
    assert 0.3 < np.mean([r.confidence for r in readings]) < 0.7  # unmarked: margins spread uniformly


def test_the_key_matters(wm):
    marked = wm.embed(scene(64, seed=1), PAYLOAD)
    assert not Watermarker(WatermarkConfig(key="operator-secret")).detect(marked).present


def test_survives_mild_jpeg_at_64_and_jpeg_and_resizing_at_256(wm):
    small = wm.embed(scene(64, seed=5), PAYLOAD)
    assert wm.detect(decode(jpeg(small, 90))).payload == PAYLOAD
    large = wm.embed(scene(256, seed=6), PAYLOAD)
    assert wm.detect(decode(jpeg(large, 75))).payload == PAYLOAD
    assert wm.detect(resized(large, 0.5)).payload == PAYLOAD
    assert wm.detect(resized(large, 1.5)).payload == PAYLOAD


def test_too_small_or_saturated_images_are_refused_with_the_reason(wm):
    with pytest.raises(WatermarkError, match="at least 64x64.*got 32x32"):
        wm.embed(scene(32, seed=0), PAYLOAD)
    white = np.full((64, 64, 3), 255, np.uint8)
    assert wm.detect(wm.embed(white, PAYLOAD)).payload == PAYLOAD  # the default passes find room below 255
    with pytest.raises(WatermarkError, match="did not read back"):
        Watermarker(WatermarkConfig(max_iterations=1)).embed(white, PAYLOAD)  # one pass: clipping eats half of it


def test_payload_is_checked(wm):
    with pytest.raises(ValueError, match="32-bit"):
        wm.embed(scene(64), 2**32)


def test_config_is_bounded():
    with pytest.raises(ValueError):
        WatermarkConfig(strength=1.0)
    with pytest.raises(ValueError):
        WatermarkConfig(keyy="x")
