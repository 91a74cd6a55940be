"""The one call a renderer makes on its output: check every image, withhold the flagged ones, stamp the rest."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from serving.safety.images import ImageLike, encode_png, to_rgb
from serving.safety.nsfw import ImageSafetyChecker, ImageSafetyConfig, SafetyVerdict, load_image_safety_checker
from serving.safety.provenance import ProvenanceConfig, Stamper
from serving.safety.record import ProvenanceRecord


class OutputSafetyConfig(BaseModel):
    """Operator settings for rendered images: the NSFW check and the provenance stamp."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    image_check: ImageSafetyConfig = Field(default_factory=ImageSafetyConfig)
    provenance: ProvenanceConfig = Field(default_factory=ProvenanceConfig)


@dataclass(frozen=True)
class GuardedImage:
    """One rendered image after the guard: ``png`` is None when it was withheld."""

    png: bytes | None
    verdict: SafetyVerdict | None  # None when the check is disabled
    watermarked: bool
    watermark_error: str | None
    signed: bool

    @property
    def withheld(self) -> bool:
        return self.png is None

    @property
    def withheld_reason(self) -> str | None:
        if self.verdict is None or not self.verdict.flagged:
            return None
        v = self.verdict
        return f"image flagged by {v.checker}: NSFW score {v.score:.3f} >= {v.threshold}"


class OutputGuard:
    """Check, then stamp. A flagged image is never encoded or stamped: its pixels stop here."""

    def __init__(self, config: OutputSafetyConfig | None = None, checker: ImageSafetyChecker | None = None):
        self.config = config or OutputSafetyConfig()
        if checker is None and self.config.image_check.enabled:
            checker = load_image_safety_checker(self.config.image_check)
        self.checker = checker if self.config.image_check.enabled else None
        self.stamper = Stamper(self.config.provenance) if self.config.provenance.enabled else None

    def process(self, images: Sequence[ImageLike], records: Sequence[ProvenanceRecord]) -> list[GuardedImage]:
        if len(images) != len(records):
            raise ValueError(f"one provenance record per image: got {len(images)} images and {len(records)} records")
        arrays = [to_rgb(img) for img in images]  # decode once for both the check and the stamp
        verdicts: list[SafetyVerdict | None] = (
            list(self.checker.check_batch(arrays)) if self.checker is not None else [None] * len(arrays)
        )
        out = []
        for image, record, verdict in zip(arrays, records, verdicts):
            if verdict is not None and verdict.flagged:
                out.append(GuardedImage(png=None, verdict=verdict, watermarked=False, watermark_error=None,
                                        signed=False))
                continue
            if self.stamper is None:
                out.append(GuardedImage(png=encode_png(image), verdict=verdict, watermarked=False,
                                        watermark_error="provenance disabled by configuration", signed=False))
                continue
            stamped = self.stamper.stamp(image, record)
            out.append(GuardedImage(png=stamped.png, verdict=verdict, watermarked=stamped.watermarked,
                                    watermark_error=stamped.watermark_error, signed=stamped.signed))
        return out
