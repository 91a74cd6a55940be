"""The provenance record every image carries: what made it, from what, when, and that it is AI-generated."""

from __future__ import annotations

import datetime
import hashlib
import json
from importlib import metadata
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# IPTC NewsCodes digital source type for "created by a model trained on sampled content" -- the term C2PA, Google and
# Adobe use for generative-AI images.
DIGITAL_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
GENERATOR_NAME = "promptbeam"
try:
    GENERATOR_VERSION = metadata.version("promptbeam")
except metadata.PackageNotFoundError:  # running from a source tree that was never installed
    GENERATOR_VERSION = "0+unknown"
SCHEMA = "promptbeam.provenance/1"


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


class ProvenanceRecord(BaseModel):
    """Written into every image's metadata; its hash is the watermark's payload, so the two can be checked together."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    schema_: Literal["promptbeam.provenance/1"] = Field(default=SCHEMA, alias="schema")
    ai_generated: Literal[True] = Field(default=True, description="Always true: every image promptbeam writes is.")
    digital_source_type: str = Field(default=DIGITAL_SOURCE_TYPE, description="IPTC digital source type URI.")
    generator: str = Field(default=f"{GENERATOR_NAME} {GENERATOR_VERSION}", max_length=200)
    campaign: str | None = Field(default=None, max_length=256, description="Campaign name, if part of one.")
    intent: str | None = Field(default=None, max_length=256, description="Intent id within the campaign.")
    candidate: str | None = Field(default=None, max_length=256, description="Candidate / render request id.")
    prompt: str = Field(max_length=20_000, description="The prompt the image was rendered from.")
    negative_prompt: str | None = Field(default=None, max_length=20_000)
    seed: int = Field(ge=0, lt=2**63)
    model: str = Field(min_length=1, max_length=1000, description="Diffusion model id or path.")
    width: int | None = Field(default=None, ge=1)
    height: int | None = Field(default=None, ge=1)
    steps: int | None = Field(default=None, ge=1)
    created: str = Field(default_factory=_now, description="ISO 8601 UTC time of stamping.")

    def canonical_json(self, exclude: frozenset[str] = frozenset()) -> str:
        """Sorted keys, ASCII only (non-ASCII escaped): the same record always gives the same bytes."""
        body = self.model_dump(mode="json", by_alias=True, exclude=set(exclude))
        return json.dumps(body, sort_keys=True, ensure_ascii=True, separators=(",", ":"))

    def watermark_id(self) -> int:
        """First 32 bits of the SHA-256 of the record without ``created``: what the invisible watermark carries.

        The time is left out so that the same render stamps the same pixels whenever it happens (a resumed or
        repeated search sees bit-identical images); it still lies in the metadata, which the id is checked against.
        """
        digest = hashlib.sha256(self.canonical_json(exclude=frozenset({"created"})).encode("ascii")).digest()
        return int.from_bytes(digest[:4], "big")
