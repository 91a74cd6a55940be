"""Image variants and the image writer, run where the image is made (the diffusion engine's encoder pool).

Images are big and control is small: a 512² PNG is ~0.6 MB and re-encoding it for the critic cost ~45 ms of CPU in the
campaign process, more than a GPU needs to draw it. So the renderer makes every variant once, from the pixels it
already holds, and writes the full image to the campaign's store itself; the campaign receives a reference, its size
and hash, and the small critic variant.

The critic variant is JPEG (quality 90): at 448² it is ~80 KB and, measured on this machine from a 512² smooth+noise
image (resize included, 2026-12-03, a busy 2-core CPU), about as fast as PNG level 6 and 2x faster than PNG level 1 or
lossless WebP, at a sixth of their size; lossy WebP at method 0 was slower still. Every VLM input path reads it
(PIL, and data URLs by content). An image that already fits the critic is sent as it is, so the critic sees
exact pixels where no downscale happens.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import posixpath
import uuid

from agents.critic import fitted_size
from agents.messages import StoredImage

logger = logging.getLogger(__name__)

CRITIC_JPEG_QUALITY = 90


def critic_variant(pixels, encoded: bytes, max_pixels: int) -> bytes:
    """The image as the critic sees it: ``encoded`` itself when it fits ``max_pixels``, else the HxWx3 uint8
    ``pixels`` downscaled (bicubic, aspect kept) and encoded as JPEG."""
    from PIL import Image

    height, width = pixels.shape[:2]
    size = fitted_size(width, height, max_pixels)
    if size == (width, height):
        return encoded
    buf = io.BytesIO()
    Image.fromarray(pixels).resize(size, Image.Resampling.BICUBIC).save(buf, format="JPEG",
                                                                        quality=CRITIC_JPEG_QUALITY)
    return buf.getvalue()


def write_image(uri: str, data: bytes) -> StoredImage:
    """Write ``data`` to the fsspec ``uri`` whole or not at all (a local file through a temporary name and a rename;
    an object store's PUT is whole by itself) and return its reference, size and sha256."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(uri)
    if "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)):
        os.makedirs(posixpath.dirname(path), exist_ok=True)
        tmp = f"{path}.{uuid.uuid4().hex}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    else:
        fs.pipe_file(path, data)
    return StoredImage(uri=uri, size=len(data), sha256=hashlib.sha256(data).hexdigest())


def try_write_image(uri: str | None, data: bytes) -> StoredImage | None:
    """:func:`write_image`, or None when there is nowhere to write or the store cannot be reached from here: the
    caller then returns the bytes and the campaign writes them (one path that degrades)."""
    if uri is None or not data:
        return None
    try:
        return write_image(uri, data)
    except Exception as exc:  # noqa: BLE001 - any store failure degrades to handing the bytes back
        logger.warning("could not write the image to %s (%s: %s); returning its bytes", uri, type(exc).__name__, exc)
        return None
