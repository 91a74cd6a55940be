"""Images drawn with PIL for the safety tests: deterministic, with smooth regions, edges and texture like renders."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def scene(width: int, height: int | None = None, seed: int = 0) -> np.ndarray:
    """A sky gradient, a few shapes and mild noise: an (H, W, 3) uint8 array."""
    height = height or width
    rng = np.random.default_rng(seed)
    y = np.linspace(0, 1, height)[:, None, None]
    top, bottom = rng.uniform(60, 220, 3), rng.uniform(20, 200, 3)
    base = (top * (1 - y) + bottom * y) * np.ones((height, width, 3))
    img = Image.fromarray(base.astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x0, y0 = rng.uniform(0, width * 0.8), rng.uniform(0, height * 0.8)
        w, h = rng.uniform(width * 0.1, width * 0.5), rng.uniform(height * 0.1, height * 0.5)
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x0 + w, y0 + h), fill=color)
    img = img.filter(ImageFilter.GaussianBlur(radius=max(1, width // 128)))
    arr = np.asarray(img).astype(np.float64) + rng.normal(0, 4, (height, width, 3))
    return np.clip(arr, 0, 255).astype(np.uint8)


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def jpeg(arr: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


def resized(arr: np.ndarray, scale: float) -> np.ndarray:
    h, w = arr.shape[:2]
    return np.asarray(Image.fromarray(arr).resize((round(w * scale), round(h * scale)), Image.Resampling.BICUBIC))
