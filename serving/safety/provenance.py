"""Provenance on every image: PNG text metadata, an invisible watermark, optionally C2PA Content Credentials.

:meth:`Stamper.stamp` writes, in this order (each layer covers what the previous cannot):

1. the invisible watermark (:mod:`serving.safety.watermark`) carrying the first 32 bits of the SHA-256 of the
   provenance record (all but its time: the same render gets the same pixels) -- survives PNG round trips, and for
   images of 256 pixels and up JPEG re-encoding and resizing that strip all metadata;
2. PNG text chunks: ``promptbeam:provenance`` (the record as JSON, plus the watermark's status), an XMP packet
   (``XML:com.adobe.xmp``) with the IPTC digital source type ``trainedAlgorithmicMedia`` (what Google, Adobe and C2PA
   tools read as "AI-generated"), and the PNG standard keywords ``Software``, ``Source`` (model), ``Description``
   (prompt), ``Creation Time`` and ``Comment``;
3. where the operator configured a certificate, a signed C2PA manifest over all of the above
   (:mod:`serving.safety.credentials`), which makes any later change to pixels or metadata detectable.

:func:`verify` reads all three back and says which are present and whether they agree.
"""

from __future__ import annotations

import datetime
import email.utils
import io
import json
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

import numpy as np
from PIL import Image, PngImagePlugin
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from serving.safety.credentials import C2paConfig, C2paReport, C2paSigner, describe, read_credentials
from serving.safety.images import ImageDecodeError, ImageLike, to_rgb
from serving.safety.record import DIGITAL_SOURCE_TYPE, ProvenanceRecord
from serving.safety.watermark import SCHEME, Watermarker, WatermarkConfig, WatermarkError, WatermarkReading

RECORD_KEY = "promptbeam:provenance"
XMP_KEY = "XML:com.adobe.xmp"
_XMP_SOURCE_TYPE = re.compile(r"DigitalSourceType(?:\s*=\s*[\"']([^\"']+)[\"']|\s*>\s*([^<\s]+)\s*<)")


class ProvenanceConfig(BaseModel):
    """What is stamped on every image, and what ``verify`` trusts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(default=True, description="Stamp every image (metadata, watermark, C2PA if configured).")
    watermark: WatermarkConfig | None = Field(
        default_factory=WatermarkConfig, description="Invisible watermark settings; None writes metadata only."
    )
    c2pa: C2paConfig | None = Field(
        default=None, description="Signing credentials for C2PA Content Credentials; None signs nothing."
    )
    trust_anchors: Path | None = Field(
        default=None, description="PEM root certificates that verification treats as trusted C2PA signers."
    )


@dataclass(frozen=True)
class StampedImage:
    """A stamped PNG and what went into it."""

    png: bytes
    watermarked: bool
    watermark_error: str | None
    signed: bool


def _plain(text: str) -> str:
    """Text for human-readable chunks: no control characters (XML 1.0 and PNG tEXt forbid most of them)."""
    return "".join(ch if ch in "\t\n" or unicodedata.category(ch)[0] != "C" else " " for ch in text)


def _xmp(record: ProvenanceRecord) -> str:
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">\n'
        ' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
        '  <rdf:Description rdf:about=""\n'
        '    xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"\n'
        '    xmlns:xmp="http://ns.adobe.com/xap/1.0/"\n'
        '    xmlns:dc="http://purl.org/dc/elements/1.1/"\n'
        f"    Iptc4xmpExt:DigitalSourceType={quoteattr(record.digital_source_type)}\n"
        f"    xmp:CreatorTool={quoteattr(_plain(record.generator))}\n"
        f"    xmp:CreateDate={quoteattr(record.created)}>\n"
        f'   <dc:description><rdf:Alt><rdf:li xml:lang="x-default">{escape(_plain(record.prompt))}</rdf:li>'
        "</rdf:Alt></dc:description>\n"
        "  </rdf:Description>\n"
        " </rdf:RDF>\n"
        "</x:xmpmeta>\n"
        '<?xpacket end="r"?>'
    )


def _png_info(record: ProvenanceRecord, watermark: dict) -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    body = {**record.model_dump(mode="json", by_alias=True), "watermark": watermark}
    info.add_itxt(RECORD_KEY, json.dumps(body, ensure_ascii=True, sort_keys=True), zip=True)
    info.add_itxt(XMP_KEY, _xmp(record))
    info.add_text("Software", _plain(record.generator))
    info.add_text("Source", _plain(record.model))
    info.add_text("Description", _plain(record.prompt), zip=len(record.prompt) > 1000)
    try:
        when = email.utils.format_datetime(datetime.datetime.fromisoformat(record.created))
    except ValueError:
        when = record.created
    info.add_text("Creation Time", when)
    info.add_text("Comment", "AI-generated image (IPTC digital source type trainedAlgorithmicMedia)")
    return info


class Stamper:
    """Stamps images as configured. Loads the watermark tables and C2PA credentials once; safe to share across
    threads (the watermarker is immutable, C2PA signing takes a lock)."""

    def __init__(self, config: ProvenanceConfig | None = None):
        self.config = config or ProvenanceConfig()
        self.watermarker = Watermarker(self.config.watermark) if self.config.watermark is not None else None
        self.signer = C2paSigner(self.config.c2pa) if self.config.c2pa is not None else None

    def stamp(self, image: ImageLike, record: ProvenanceRecord) -> StampedImage:
        """Watermark, metadata and (if configured) C2PA signature on one image; returns the PNG bytes.

        An image that cannot carry the watermark (under 64x64, or almost all clipped black/white) still gets the
        metadata, with the reason in the record's ``watermark`` entry; nothing else fails silently.
        """
        rgb = to_rgb(image)
        payload = record.watermark_id()
        error: str | None = None
        if self.watermarker is None:
            error = "watermarking disabled by configuration"
        else:
            try:
                rgb = self.watermarker.embed(rgb, payload)
            except WatermarkError as exc:
                error = str(exc)
        watermark = {"scheme": SCHEME, "id": f"{payload:08x}", "embedded": error is None, "error": error}
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format="PNG", pnginfo=_png_info(record, watermark))
        png = buf.getvalue()
        if self.signer is not None:
            png = self.signer.sign(png, record)
        return StampedImage(png=png, watermarked=error is None, watermark_error=error, signed=self.signer is not None)

    def stamp_batch(self, images: Sequence[ImageLike], records: Sequence[ProvenanceRecord]) -> list[StampedImage]:
        if len(images) != len(records):
            raise ValueError(f"stamp_batch needs one record per image, got {len(images)} images and {len(records)} "
                             "records")
        return [self.stamp(img, rec) for img, rec in zip(images, records)]


class ProvenanceReport(BaseModel):
    """What :func:`verify` found in an image, layer by layer."""

    model_config = ConfigDict(extra="forbid")

    width: int
    height: int
    format: str | None = Field(description="The container format PIL detected (PNG, JPEG, ...).")
    metadata_present: bool = Field(description=f"A {RECORD_KEY} text chunk is there.")
    record: ProvenanceRecord | None = Field(default=None, description="The record, when present and well-formed.")
    metadata_error: str | None = Field(default=None, description="Why the record chunk could not be read.")
    stamped_watermark: dict | None = Field(default=None, description="What the stamper said about the watermark.")
    xmp_digital_source_type: str | None = Field(default=None, description="IPTC DigitalSourceType from XMP.")
    watermark: WatermarkReading
    watermark_matches_record: bool | None = Field(
        default=None, description="The watermark's id equals the record's hash (None unless both are present).",
    )
    c2pa: C2paReport

    @property
    def ai_generated(self) -> bool:
        """Any layer says so (the watermark only promptbeam writes)."""
        return (
            (self.record is not None and self.record.ai_generated)
            or self.xmp_digital_source_type == DIGITAL_SOURCE_TYPE
            or self.watermark.present
            or self.c2pa.ai_generated
        )

    @property
    def found(self) -> bool:
        """Some provenance is present."""
        return self.metadata_present or self.watermark.present or self.c2pa.present

    def lines(self) -> list[str]:
        """A short report for people."""
        rec = self.record
        wm = self.watermark
        out = [f"image:      {self.width}x{self.height} {self.format or '?'}",
               f"AI-generated: {'yes' if self.ai_generated else 'no provenance says so'}"]
        if rec is not None:
            out.append(f"metadata:   present -- campaign {rec.campaign!r}, intent {rec.intent!r}, seed {rec.seed}, "
                       f"model {rec.model!r}, created {rec.created}")
            out.append(f"prompt:     {rec.prompt!r}")
        else:
            state = f"unreadable: {self.metadata_error}" if self.metadata_present else "absent"
            out.append(f"metadata:   {state}")
        if self.xmp_digital_source_type:
            out.append(f"XMP:        DigitalSourceType {self.xmp_digital_source_type}")
        if wm.present:
            match = {True: "matches the metadata", False: "does NOT match the metadata", None: "no metadata to compare"}
            out.append(f"watermark:  present, id {wm.payload:08x} ({match[self.watermark_matches_record]}), "
                       f"margin {wm.confidence:.2f}")
        else:
            note = ""
            if self.stamped_watermark and not self.stamped_watermark.get("embedded"):
                note = f" (stamper: {self.stamped_watermark.get('error')})"
            out.append(f"watermark:  absent{note}")
        out.append(f"C2PA:       {describe(self.c2pa)}")
        return out


def _metadata(img: Image.Image) -> tuple[dict[str, str], str | None]:
    text = dict(getattr(img, "text", None) or {})
    xmp = text.get(XMP_KEY) or img.info.get(XMP_KEY) or img.info.get("xmp")
    if isinstance(xmp, bytes):
        xmp = xmp.decode("utf-8", "replace")
    return text, xmp


def verify(data: bytes, config: ProvenanceConfig | None = None) -> ProvenanceReport:
    """Read metadata, watermark and C2PA credentials from encoded image bytes (PNG, JPEG, WebP, ...).

    Raises :class:`~serving.safety.images.ImageDecodeError` if the bytes are not an image.
    """
    config = config or ProvenanceConfig()
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            fmt = img.format
            text, xmp = _metadata(img)
            rgb = np.asarray(img.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageDecodeError.of(data, exc) from exc

    record: ProvenanceRecord | None = None
    stamped: dict | None = None
    error: str | None = None
    raw = text.get(RECORD_KEY)
    if raw is not None:
        try:
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise ValueError(f"expected a JSON object, got {type(body).__name__}")
            stamped = body.pop("watermark", None)
            record = ProvenanceRecord.model_validate(body)
        except (ValueError, ValidationError) as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]

    source_type = None
    if xmp and (m := _XMP_SOURCE_TYPE.search(xmp)):
        source_type = m.group(1) or m.group(2)

    watermarker = Watermarker(config.watermark or WatermarkConfig())
    reading = watermarker.detect(rgb)
    matches = reading.payload == record.watermark_id() if (reading.present and record is not None) else None

    anchors = config.trust_anchors.read_text() if config.trust_anchors is not None else None
    return ProvenanceReport(
        width=rgb.shape[1], height=rgb.shape[0], format=fmt,
        metadata_present=raw is not None, record=record, metadata_error=error, stamped_watermark=stamped,
        xmp_digital_source_type=source_type, watermark=reading, watermark_matches_record=matches,
        c2pa=read_credentials(data, anchors),
    )


__all__ = ["ProvenanceConfig", "ProvenanceRecord", "ProvenanceReport", "StampedImage", "Stamper", "verify",
           "C2paConfig", "ImageDecodeError"]
