"""Image variants and the image writer, run where the image is made (the diffusion engine's encoder pool).

Images are big and control is small: a 512² PNG is ~0.6 MB and re-encoding it for the critic cost ~45 ms of CPU in the
campaign process, more than a GPU needs to draw it. So the renderer makes every variant once, from the pixels it
already holds, and writes the full image to the campaign's store itself; the campaign receives a reference, its size
and hash, and the small critic variant.

The critic variant is JPEG (quality 90): at 448² it is ~80 KB and, measured on this machine from a 512² smooth+noise
image (resize included, 2026-12-03, a busy 2-core CPU), about as fast as PNG level 6 and 2x faster than PNG level 1 or
lossless WebP, at a sixth of their size; lossy WebP at method 0 was slower still. Every VLM input path reads it
(PIL, and data URLs, which carry its media type). An image that already fits the critic is shown as it is, so the
critic sees exact pixels where no downscale happens.

The write goes through the project's one writer (serving/files.py) and its store retries (serving/storage.py, with
serving/retry.py's policy), briefly: an encoder thread that waits holds back the next batch, so after a short backoff
the bytes go back and the campaign writes them under its own, longer policy. An outage is logged once a minute, not
once an image.
"""

from __future__ import annotations

import hashlib
import io
import logging
import posixpath
import threading
import time

import fsspec
from fsspec.implementations.local import LocalFileSystem

from agents.critic import fitted_size
from agents.messages import RenderRequest, StoredImage
from serving.retry import RetryPolicy
from serving.files import write_atomic
from serving.storage import call_store, guarded

logger = logging.getLogger(__name__)

CRITIC_JPEG_QUALITY = 90
RENDERER_WRITE_RETRY = RetryPolicy(attempts=3, backoff_s=0.1, max_backoff_s=0.4)
"""The renderer's image writes: two retries, 0.3 s of waiting at most, then the bytes go back to the campaign."""


def critic_variant(pixels, max_pixels: int) -> bytes | None:
    """The HxWx3 uint8 ``pixels`` downscaled (bicubic, aspect kept) to at most ``max_pixels`` and encoded as JPEG;
    None when they already fit (the critic is shown the image itself)."""
    from PIL import Image

    height, width = pixels.shape[:2]
    size = fitted_size(width, height, max_pixels)
    if size == (width, height):
        return None
    buf = io.BytesIO()
    Image.fromarray(pixels).resize(size, Image.Resampling.BICUBIC).save(buf, format="JPEG",
                                                                        quality=CRITIC_JPEG_QUALITY)
    return buf.getvalue()


def write_image(uri: str, data: bytes, policy: RetryPolicy = RENDERER_WRITE_RETRY) -> StoredImage:
    """Write ``data`` to the fsspec ``uri`` whole or not at all (serving.files.write_atomic), retried per ``policy``
    while the store is unavailable, and return its reference, size and sha256. Raises
    :class:`serving.storage.StoreWriteError` naming the uri when it cannot."""
    fs, path = fsspec.core.url_to_fs(uri)

    def write() -> None:
        if isinstance(fs, LocalFileSystem):  # a shared disk: the campaign made images/, but a path may be new here
            fs.makedirs(posixpath.dirname(path), exist_ok=True)
        write_atomic(fs, path, data)

    call_store(lambda: guarded("write", uri, write), policy, log_retries=False)
    return StoredImage(uri=uri, size=len(data), sha256=hashlib.sha256(data).hexdigest())


class UnwrittenImages:
    """Images handed back because the store could not be written from here: logged on the first, then at most once
    every ``every_s`` with how many since (an outage costs a line a minute, not a line an image)."""

    def __init__(self, every_s: float = 60.0):
        self.every_s = every_s
        self.count = 0
        self.logged_at: float | None = None
        self._lock = threading.Lock()  # the encoder pool's threads all report here

    def note(self, error: BaseException) -> None:
        with self._lock:
            self.count += 1
            now = time.monotonic()
            if self.logged_at is not None and now - self.logged_at < self.every_s:
                return
            count, self.count, self.logged_at = self.count, 0, now
        logger.warning("could not write %d image(s) to the campaign's store (last: %s); their bytes go back to the "
                       "campaign, which writes them", count, error)


UNWRITTEN = UnwrittenImages()


def try_write_image(uri: str | None, data: bytes) -> StoredImage | None:
    """:func:`write_image`, or None when there is nowhere to write or the store cannot be written from here: the
    caller then returns the bytes and the campaign writes them (one path that degrades)."""
    if uri is None or not data:
        return None
    try:
        return write_image(uri, data)
    except Exception as exc:  # noqa: BLE001 - any store failure degrades to handing the bytes back
        UNWRITTEN.note(exc)
        return None


def finish_image(pixels, data: bytes, request: RenderRequest) -> tuple[bytes, StoredImage | None, bytes | None]:
    """What a renderer returns for one image, encoded as ``data`` from ``pixels``: ``(png, stored, critic_image)``.
    The image is written to ``request.image_uri`` where one is named and can be written (``png`` then empty); the
    critic is shown the variant when the image is larger than ``critic_max_pixels``, else the image itself, which
    travels as ``critic_image`` only where ``png`` is empty (never twice). An empty ``data`` (withheld) stays empty."""
    if not data:
        return data, None, None
    stored = try_write_image(request.image_uri, data)
    variant = critic_variant(pixels, request.critic_max_pixels) if request.critic_max_pixels is not None else None
    if variant is None and stored is not None:
        variant = data
    return (b"" if stored is not None else data), stored, variant
