"""ImageBudget: a cap on the image bytes a campaign holds at once, whatever the image size and the campaign size.

A render call reserves an estimate of its images' bytes before it is sent (waiting while the cap is reached), swaps the
estimate for the bytes that actually came back, and gives them back when its images are stored and critiqued. With the
renderer writing images to the store itself only the critic variants come back, so the estimate is small; a renderer
that hands back whole images is estimated at 3 bytes a pixel (raw RGB, above any PNG of it but noise). Memory stays
below the cap plus what one render call's images exceed their estimate; a call bigger than the whole cap runs alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from agents.messages import RenderRequest, RenderResult

DEFAULT_MAX_BYTES = 256 * 2**20


def held_bytes(result: RenderResult) -> int:
    return len(result.png) + len(result.critic_image or b"")


class ImageBudget:
    """Shared by every intent of a campaign; ``held`` and ``peak`` say how many bytes are (were at most) reserved.
    ``renderer_stores``: the renderer writes images to the store itself, so only critic variants come back."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES, *, renderer_stores: bool = False):
        if max_bytes < 1:
            raise ValueError(f"`max_bytes` must be positive but is {max_bytes}")
        self.max_bytes = max_bytes
        self.renderer_stores = renderer_stores
        self.held = 0
        self.peak = 0
        self._changed = asyncio.Condition()

    @asynccontextmanager
    async def hold(self, nbytes: int) -> AsyncIterator[_Hold]:
        """Reserve ``nbytes`` (waiting while they would pass the cap, unless nothing is held) until the block ends."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.held == 0 or self.held + nbytes <= self.max_bytes)
            self._add(nbytes)
        hold = _Hold(self, nbytes)
        try:
            yield hold
        finally:
            async with self._changed:
                self._add(-hold.nbytes)
                self._changed.notify_all()

    def estimate(self, request: RenderRequest) -> int:
        """Bytes a request's result will hold here: the critic variant (~1 byte a pixel as JPEG) when the renderer
        stores the image, else the whole image (3 bytes a pixel)."""
        pixels = request.width * request.height
        if self.renderer_stores:
            return min(pixels, request.critic_max_pixels or pixels)
        return 3 * pixels

    def _add(self, nbytes: int) -> None:
        self.held += nbytes
        self.peak = max(self.peak, self.held)


class _Hold:
    def __init__(self, budget: ImageBudget, nbytes: int):
        self.budget = budget
        self.nbytes = nbytes

    def resize(self, nbytes: int) -> None:
        """Replace the estimate by the bytes that came back (never waits: they are already here)."""
        self.budget._add(nbytes - self.nbytes)
        self.nbytes = nbytes
