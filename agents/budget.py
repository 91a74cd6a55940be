"""ImageBudget: a cap on the image bytes a campaign holds at once, whatever the image size and the campaign size.

A render call reserves its images' bytes before it is sent (waiting while the cap is reached), swaps the reservation
for the bytes that actually came back, and gives them back when its images are stored and critiqued.

The reservation is what the call may bring back, not what it usually does: the whole image at 3 bytes a pixel (raw
RGB, more than any PNG, WebP or JPEG of a rendered image) plus the critic's variant at the same rate where the image is
larger than the critic's size. A renderer that writes images to the store itself sends only the variant, so the
reservation shrinks to it as soon as the call returns; but it may also fail to write and send the whole image, and a
reservation sized for the variant alone would then let every call in flight pass the cap by an image batch. So: held
bytes stay under the cap unless an image is larger than raw RGB (pure noise, by PNG's few bytes of framing); a call
bigger than the whole cap runs alone. The cost is fewer calls in flight for big images (256 MiB holds about nine
calls of eight 1024² images): raise ``CampaignSpec.max_image_bytes_in_flight`` where the memory is there.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from agents.messages import RenderRequest, RenderResult

BYTES_PER_PIXEL = 3
"""Raw RGB: the most an encoded image of a render holds (see the module docstring)."""


def held_bytes(result: RenderResult) -> int:
    """The image bytes a render result holds here."""
    return len(result.png) + len(result.critic_image or b"")


def reserved_bytes(request: RenderRequest) -> int:
    """The most image bytes the result of ``request`` may hold here: the image, and its critic variant if one is
    made (the image is larger than ``critic_max_pixels``)."""
    pixels = request.width * request.height
    variant = min(pixels, request.critic_max_pixels) if request.critic_max_pixels is not None else 0
    return BYTES_PER_PIXEL * (pixels + (variant if variant < pixels else 0))


class ImageBudget:
    """Shared by every intent of a campaign; ``held`` and ``peak`` say how many bytes are (were at most) reserved or
    held."""

    def __init__(self, max_bytes: int):
        if max_bytes < 1:
            raise ValueError(f"`max_bytes` must be positive but is {max_bytes}")
        self.max_bytes = max_bytes
        self.held = 0
        self.peak = 0
        self._changed = asyncio.Condition()

    @asynccontextmanager
    async def hold(self, requests: list[RenderRequest]) -> AsyncIterator[_Hold]:
        """Reserve what the results of ``requests`` may hold (waiting while that would pass the cap, unless nothing is
        held) until the block ends; :meth:`_Hold.resize` then swaps the reservation for what came back."""
        nbytes = sum(reserved_bytes(r) for r in requests)
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

    def _add(self, nbytes: int) -> None:
        self.held += nbytes
        self.peak = max(self.peak, self.held)


class _Hold:
    def __init__(self, budget: ImageBudget, nbytes: int):
        self.budget = budget
        self.nbytes = nbytes

    async def resize(self, nbytes: int) -> None:
        """Replace the reservation by the bytes that came back (they are already here: only the lock is awaited) and
        wake the calls waiting for what it frees."""
        async with self.budget._changed:
            self.budget._add(nbytes - self.nbytes)
            self.nbytes = nbytes
            self.budget._changed.notify_all()
