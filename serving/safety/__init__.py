"""Output safety and provenance for rendered images (engine-side: no Ray).

- :mod:`~serving.safety.nsfw`: ``ImageSafetyChecker`` protocol and the open_nsfw implementation
- :mod:`~serving.safety.watermark`: an invisible watermark that fits 64x64 images
- :mod:`~serving.safety.provenance`: ``Stamper.stamp`` (metadata + watermark + C2PA) and ``verify``
- :mod:`~serving.safety.credentials`: C2PA Content Credentials
- :mod:`~serving.safety.guard`: ``OutputGuard.process`` -- check, withhold, stamp: the renderer's one call
- :mod:`~serving.safety.cli`: ``promptbeam verify IMAGE``
"""

from serving.safety.guard import GuardedImage, OutputGuard, OutputSafetyConfig
from serving.safety.nsfw import ImageSafetyChecker, ImageSafetyConfig, OpenNSFWChecker, SafetyVerdict
from serving.safety.provenance import ProvenanceConfig, ProvenanceReport, Stamper, verify
from serving.safety.record import ProvenanceRecord

__all__ = [
    "GuardedImage", "ImageSafetyChecker", "ImageSafetyConfig", "OpenNSFWChecker", "OutputGuard", "OutputSafetyConfig",
    "ProvenanceConfig", "ProvenanceRecord", "ProvenanceReport", "SafetyVerdict", "Stamper", "verify",
]
