"""One way in for images: PNG (or any PIL-readable) bytes or a uint8 array -> an RGB uint8 array."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, UnidentifiedImageError

ImageLike = bytes | bytearray | np.ndarray | Image.Image


class ImageDecodeError(ValueError):
    """The bytes are not an image PIL can read (the message says what was given)."""

    @classmethod
    def of(cls, data: bytes | bytearray, exc: Exception) -> ImageDecodeError:
        why = "not a known image format" if isinstance(exc, UnidentifiedImageError) else str(exc)
        return cls(f"could not decode {len(data)} bytes (starting {bytes(data[:8])!r}) as an image: {why}")


def to_rgb(image: ImageLike) -> np.ndarray:
    """An ``(H, W, 3)`` uint8 RGB array from encoded bytes, a PIL image or an (H, W) / (H, W, 3|4) uint8 array."""
    if isinstance(image, (bytes, bytearray)):
        try:
            with Image.open(io.BytesIO(bytes(image))) as img:
                return np.asarray(img.convert("RGB"))
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise ImageDecodeError.of(image, exc) from exc
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise ValueError(f"image arrays must be uint8 but this one is {image.dtype}")
        if image.ndim == 2:
            return np.repeat(image[:, :, None], 3, axis=2)
        if image.ndim == 3 and image.shape[2] in (3, 4):
            return np.ascontiguousarray(image[:, :, :3])
        raise ValueError(f"image arrays must be (H, W), (H, W, 3) or (H, W, 4) but this one is {image.shape}")
    raise TypeError(f"expected PNG bytes, a PIL image or a uint8 array, got {type(image).__name__}")


def encode_png(image: ImageLike) -> bytes:
    """PNG bytes of the image (bytes given are returned as they are: they are already encoded)."""
    if isinstance(image, (bytes, bytearray)):
        return bytes(image)
    buf = io.BytesIO()
    Image.fromarray(to_rgb(image)).save(buf, format="PNG")
    return buf.getvalue()
