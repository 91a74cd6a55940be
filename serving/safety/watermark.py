"""An invisible watermark that fits 64x64 images: a 32-bit id (+ CRC-16) in the DCT of a 64x64 luminance carrier.

Why not ``invisible-watermark`` (what diffusers uses for SDXL): it refuses images under 256x256 pixels in both encoder
and decoder (``imwatermark/watermark.py``: "image too small, should be larger than 256x256"), and this project renders
64x64 images; it also requires the GUI ``opencv-python`` build and imports torch at import time.

The scheme (spread-transform dither modulation, a standard quantisation-index-modulation watermark):

1. The carrier is the luminance of the image, box-downsampled to 64x64 (the image itself at 64x64). Every image size
   from 64x64 up maps to the same carrier, which is why the mark survives resizing of large images.
2. Take the orthonormal 2-D DCT of the carrier. A keyed pseudo-random permutation splits the mid-frequency band
   (radius 4..30 in DCT index units: low enough to survive JPEG, above the lowest frequencies that brightness changes
   move) into 48 disjoint groups of coefficients, one per bit, each with keyed random signs.
3. Each bit is carried by the projection of its group onto its sign vector: the projection is moved to the nearest
   point of one of two interleaved lattices (step ``strength``; bit 0 or 1 picks the lattice, a keyed dither shifts
   both). Moving a projection changes the image by at most ``strength / 2`` in that direction, whatever the image, so
   the image content does not interfere with decoding (unlike additive spread spectrum).
4. The change is made on the carrier, upsampled bilinearly to the image size and added to R, G and B alike (pure
   luminance), then rounded; since upsampling, clipping and rounding move the projections a little, embedding repeats
   until every projection sits on its lattice point (or gives up and says so).

Decoding box-downsamples any image to 64x64 (smaller ones are upsampled first), reads each projection's nearer
lattice, and accepts the 48 bits only if the CRC-16 over the 32 payload bits matches: an unmarked image passes by
chance with probability 2**-16. The default strength (40) gives about 46 dB PSNR; robustness is measured in
``benchmarks/bench_safety.py``. Not robust to contrast/gamma changes (they scale the projections), cropping or
rotation; the key is public by default, so anyone can read (and, knowing the scheme, remove or forge) the mark — set a
private ``key`` if that matters. The mark is a pointer to the provenance record; the signed claim is C2PA.
"""

from __future__ import annotations

import binascii
import hashlib

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

CARRIER = 64
PAYLOAD_BITS = 32
CHECK_BITS = 16
TOTAL_BITS = PAYLOAD_BITS + CHECK_BITS
BAND = (4.0, 30.0)  # DCT radius range of the carrier coefficients that carry bits
SCHEME = "promptbeam-stdm-v1"


class WatermarkError(ValueError):
    """The mark cannot be embedded in this image (the message says why)."""


class WatermarkConfig(BaseModel):
    """How the invisible watermark is keyed and how strong it is."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str = Field(
        default=SCHEME, min_length=1, max_length=256,
        description="Secret or public key that seeds the coefficient groups, signs and dither. Readers need the same "
                    "key; the default is public so that anyone can verify.",
    )
    strength: float = Field(
        default=40.0, ge=8.0, le=128.0,
        description="Lattice step of the projections (luminance units). Larger survives stronger JPEG/resizing but "
                    "changes the image more: 24 is about 50 dB PSNR, 40 about 46 dB, 64 about 42 dB.",
    )
    max_iterations: int = Field(
        default=6, ge=1, le=20,
        description="Embedding passes: each corrects what upsampling, clipping and rounding moved.",
    )


class WatermarkReading(BaseModel):
    """What :meth:`Watermarker.detect` found."""

    model_config = ConfigDict(extra="forbid")

    present: bool = Field(description="The 48 bits decode with a matching CRC-16 (an unmarked image: chance 2^-16).")
    payload: int | None = Field(default=None, description="The 32-bit id, when present.")
    confidence: float = Field(
        description="Mean decoding margin over the 48 bits, 0..1: about 1 for an untouched mark, about 0.5 for an "
                    "unmarked image (a hint of damage, not the decision: ``present`` is).",
    )
    scheme: str = SCHEME


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    m = np.sqrt(2.0 / n) * np.cos(np.pi * (2 * i + 1) * k / (2 * n))
    m[0] /= np.sqrt(2.0)
    return m


def _bits(value: int, width: int) -> np.ndarray:
    return np.array([(value >> (width - 1 - i)) & 1 for i in range(width)], dtype=np.int64)


def _int(bits: np.ndarray) -> int:
    return int("".join(str(int(b)) for b in bits), 2)


def _check(payload: int) -> int:
    return binascii.crc_hqx(payload.to_bytes(4, "big"), 0xFFFF)


def _luma(rgb: np.ndarray) -> np.ndarray:
    x = rgb.astype(np.float64)
    return x[..., 0] * 0.299 + x[..., 1] * 0.587 + x[..., 2] * 0.114


def _resize_float(plane: np.ndarray, width: int, height: int, resample: Image.Resampling) -> np.ndarray:
    img = Image.fromarray(plane.astype(np.float32), mode="F").resize((width, height), resample)
    return np.asarray(img, dtype=np.float64)


class Watermarker:
    """Embeds and reads a 32-bit id. Immutable after construction, so one instance is safe to share across threads."""

    def __init__(self, config: WatermarkConfig | None = None):
        self.config = config or WatermarkConfig()
        self._dct = _dct_matrix(CARRIER)
        u, v = np.meshgrid(np.arange(CARRIER), np.arange(CARRIER), indexing="ij")
        radius = np.hypot(u, v)
        band = np.flatnonzero((radius >= BAND[0]) & (radius <= BAND[1]))
        seed = int.from_bytes(hashlib.sha256(f"{SCHEME}\0{self.config.key}".encode()).digest()[:8], "little")
        rng = np.random.default_rng(seed)
        groups = np.array_split(rng.permutation(band), TOTAL_BITS)
        size = min(len(g) for g in groups)
        self._index = np.stack([g[:size] for g in groups])  # (48, n): flat carrier-DCT indices per bit
        self._signs = rng.choice([-1.0, 1.0], size=self._index.shape) / np.sqrt(size)  # unit vector per bit
        self._dither = rng.uniform(0.0, 1.0, size=TOTAL_BITS)

    # -- the transform -------------------------------------------------------------------------------------------------
    def _carrier(self, rgb: np.ndarray) -> np.ndarray:
        y = _luma(rgb)
        if y.shape != (CARRIER, CARRIER):
            y = _resize_float(y, CARRIER, CARRIER, Image.Resampling.BOX)
        return y

    def _projections(self, carrier: np.ndarray) -> np.ndarray:
        coef = (self._dct @ carrier @ self._dct.T).ravel()
        return (coef[self._index] * self._signs).sum(axis=1)

    def _lattice_offset(self, bits: np.ndarray | int) -> np.ndarray:
        return (self._dither + 0.5 * np.asarray(bits)) * self.config.strength

    # -- embedding -----------------------------------------------------------------------------------------------------
    def embed(self, image: np.ndarray, payload: int) -> np.ndarray:
        """``image`` (H, W, 3) uint8 with H, W >= 64 -> the marked copy. Raises :class:`WatermarkError` if the image
        is too small or the mark does not read back (e.g. an almost entirely black or white image)."""
        if not 0 <= payload < 2**PAYLOAD_BITS:
            raise ValueError(f"payload must be an unsigned {PAYLOAD_BITS}-bit integer but is {payload}")
        h, w = image.shape[:2]
        if h < CARRIER or w < CARRIER:
            raise WatermarkError(f"images must be at least {CARRIER}x{CARRIER} pixels to carry the mark, got {w}x{h}")
        bits = np.concatenate([_bits(payload, PAYLOAD_BITS), _bits(_check(payload), CHECK_BITS)])
        offset = self._lattice_offset(bits)
        step = self.config.strength
        work = image.astype(np.float64)
        marked = image
        for _ in range(self.config.max_iterations):
            p = self._projections(self._carrier(marked))
            target = np.round((p - offset) / step) * step + offset
            move = target - p
            if np.max(np.abs(move)) < 0.05 * step:
                break
            coef = np.zeros(CARRIER * CARRIER)
            np.add.at(coef, self._index.ravel(), (move[:, None] * self._signs).ravel())
            delta = self._dct.T @ coef.reshape(CARRIER, CARRIER) @ self._dct
            if (h, w) != (CARRIER, CARRIER):
                delta = _resize_float(delta, w, h, Image.Resampling.BILINEAR)
            work = work + delta[:, :, None]
            marked = np.clip(np.round(work), 0, 255).astype(np.uint8)
        reading = self.detect(marked)
        if not reading.present or reading.payload != payload:
            raise WatermarkError(
                "the mark did not read back after embedding (too little tonal room: the image is mostly clipped "
                f"black or white); margin {reading.confidence:.2f}"
            )
        return marked

    # -- reading -------------------------------------------------------------------------------------------------------
    def detect(self, image: np.ndarray) -> WatermarkReading:
        """Read the mark from an (H, W, 3) uint8 image of any size (under 64 pixels it is upsampled first)."""
        h, w = image.shape[:2]
        if h < CARRIER or w < CARRIER:
            size = (max(w, CARRIER), max(h, CARRIER))
            image = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
        p = self._projections(self._carrier(image))
        step = self.config.strength

        def distance(bit: int) -> np.ndarray:
            e = p - self._lattice_offset(bit)
            return np.abs(e - np.round(e / step) * step)

        # soft in [-1, 1]: +1 on the lattice of bit 1, -1 on that of bit 0, 0 halfway between
        soft = (distance(0) - distance(1)) / (step / 2)
        bits = (soft > 0).astype(np.int64)
        payload, check = _int(bits[:PAYLOAD_BITS]), _int(bits[PAYLOAD_BITS:])
        present = check == _check(payload)
        confidence = float(np.mean(np.abs(soft)))
        return WatermarkReading(present=present, payload=payload if present else None, confidence=confidence)
