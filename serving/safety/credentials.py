"""C2PA Content Credentials (``c2pa-python``): sign a PNG's manifest with the generative-AI assertion, and read one.

What c2pa-rs (0.91, inside c2pa-python 0.38) requires of the signing credentials, checked offline in
``tests/test_provenance.py``:
- the end-entity certificate must carry an authority key identifier: without one, signing fails with "the certificate
  is invalid" (so do certificates made without the usual extensions). With the extensions, not a CA, key usage
  ``digitalSignature`` and an extended key usage C2PA accepts (``emailProtection``, ``documentSigning``, ...), both a
  CA-issued and a self-signed certificate sign. Give the end-entity certificate first, then any intermediates (not the
  root), in one PEM; the key in PKCS#8 PEM, matching ``algorithm``.
- without a time-stamp authority (``tsa_url``) the signature carries no trusted time: readers accept it only while the
  certificate is valid. A TSA is reached over the network at every signing; the default is none.

A reader reports ``Valid`` when the signature and hashes check out (with the failure ``signingCredential.untrusted``
when the chain ends nowhere it trusts) and ``Trusted`` when the chain ends in one of the trust anchors it was given
(``trust_anchors``); a private CA or a self-signed certificate is trusted only that way. ``Invalid`` means the image
or its manifest changed after signing (e.g. ``assertion.dataHash.mismatch``).

The dependency is required, not an extra: its wheel is about 16 MB (53 MB installed) beside a venv of about 3 GB, and
``promptbeam verify`` must read credentials wherever it is installed. It is imported only when signing is configured
or an image is verified.
"""

from __future__ import annotations

import io
import threading
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from serving.safety.record import DIGITAL_SOURCE_TYPE, GENERATOR_NAME, GENERATOR_VERSION, ProvenanceRecord

ASSERTION_LABEL = "promptbeam.provenance"
# The manifest's thumbnail would be a JPEG larger than a 64x64 PNG itself (measured: +270 KB on a 12 KB image).
_SIGNING_SETTINGS = {"builder": {"thumbnail": {"enabled": False}}}


class C2paError(ValueError):
    """Signing credentials that c2pa refuses, or a manifest that cannot be written (the message says which)."""


class C2paConfig(BaseModel):
    """Where the operator's signing certificate and key are. Only paths live in config, never key material."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cert_chain: Path = Field(description="PEM: the end-entity signing certificate first, then intermediates.")
    private_key: Path = Field(description="PEM (PKCS#8) private key of the end-entity certificate.")
    algorithm: Literal["es256", "es384", "es512", "ps256", "ps384", "ps512", "ed25519"] = Field(
        default="es256", description="Signature algorithm; must match the key (es256 = ECDSA P-256 with SHA-256)."
    )
    tsa_url: str | None = Field(
        default=None, max_length=2048,
        description="RFC 3161 time-stamp authority URL, called at every signing; None signs without a trusted time.",
    )


class C2paReport(BaseModel):
    """What a C2PA reader found in an image."""

    model_config = ConfigDict(extra="forbid")

    present: bool = Field(description="The image carries a C2PA manifest store.")
    validation_state: str | None = Field(
        default=None, description="c2pa's verdict: 'Invalid', 'Valid' (signature and hashes check out) or 'Trusted' "
                                  "(also chains to a trust anchor)."
    )
    ai_generated: bool = Field(default=False, description="A c2pa.created action with digitalSourceType "
                                                          "trainedAlgorithmicMedia is in the active manifest.")
    signer: str | None = Field(default=None, description="Common name and issuer of the signing certificate.")
    failures: list[str] = Field(default_factory=list, description="c2pa validation failure codes.")
    record: dict[str, Any] | None = Field(default=None, description=f"The {ASSERTION_LABEL} assertion, if any.")
    error: str | None = Field(default=None, description="Why the manifest could not be read, if it could not.")

    @property
    def valid(self) -> bool:
        return self.validation_state in ("Valid", "Trusted")


def manifest_for(record: ProvenanceRecord) -> dict[str, Any]:
    """The manifest definition: the generative-AI ``c2pa.created`` action plus the record as a custom assertion."""
    return {
        "claim_generator_info": [{"name": GENERATOR_NAME, "version": GENERATOR_VERSION}],
        "title": f"{record.candidate or 'image'}.png",
        "assertions": [
            {
                "label": "c2pa.actions.v2",
                "data": {
                    "actions": [
                        {
                            "action": "c2pa.created",
                            "digitalSourceType": DIGITAL_SOURCE_TYPE,
                            "softwareAgent": {"name": GENERATOR_NAME, "version": GENERATOR_VERSION},
                            "parameters": {"model": record.model},
                        }
                    ]
                },
            },
            {"label": ASSERTION_LABEL, "data": record.model_dump(mode="json", by_alias=True)},
        ],
    }


class C2paSigner:
    """Signs PNGs with the configured credentials. Reads the files once and signs a probe image at construction, so
    bad credentials fail at start-up, not on the first image. Signing is serialised by a lock (about 2 ms each)."""

    def __init__(self, config: C2paConfig):
        import c2pa

        self.config = config
        self._c2pa = c2pa
        try:
            chain = config.cert_chain.read_bytes()
            key = config.private_key.read_bytes()
        except OSError as exc:
            raise C2paError(f"cannot read C2PA credentials ({config.cert_chain}, {config.private_key}): {exc}") from exc
        alg = getattr(c2pa.C2paSigningAlg, config.algorithm.upper())
        self._lock = threading.Lock()
        try:
            self._signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(alg, chain, key, config.tsa_url))
            self._context = c2pa.Context(settings=c2pa.Settings.from_dict(_SIGNING_SETTINGS))
        except c2pa.C2paError as exc:
            raise C2paError(
                f"c2pa refused the credentials in {config.cert_chain} / {config.private_key}: {exc}"
            ) from exc
        self.sign(_probe_png(), ProvenanceRecord(prompt="probe", seed=0, model="probe"))

    def sign(self, png: bytes, record: ProvenanceRecord) -> bytes:
        """The PNG with a signed manifest embedded (a ``caBX`` chunk); pixels and text chunks unchanged."""
        out = io.BytesIO()
        with self._lock:
            try:
                builder = self._c2pa.Builder(manifest_for(record), context=self._context)
                builder.sign(self._signer, "image/png", io.BytesIO(png), out)
            except self._c2pa.C2paError as exc:
                raise C2paError(
                    f"c2pa could not sign with {self.config.cert_chain} ({self.config.algorithm}): {exc}"
                ) from exc
        return out.getvalue()


def _probe_png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (127, 127, 127)).save(buf, format="PNG")
    return buf.getvalue()


def read_credentials(data: bytes, trust_anchors_pem: str | None = None) -> C2paReport:
    """Read and validate the C2PA manifest of an image (PNG, JPEG, ...); ``trust_anchors_pem`` are extra roots."""
    import c2pa

    settings: dict[str, Any] = {"verify": {"verify_trust": True}}
    if trust_anchors_pem:
        settings["trust"] = {"trust_anchors": trust_anchors_pem}
    try:
        context = c2pa.Context(settings=c2pa.Settings.from_dict(settings))
        reader = c2pa.Reader(io.BytesIO(data), context=context)
    except c2pa.C2paError as exc:
        if "ManifestNotFound" in type(exc).__name__ or "no JUMBF" in str(exc):
            return C2paReport(present=False)
        return C2paReport(present=False, error=f"{type(exc).__name__.lstrip('_')}: {exc}")
    manifest = reader.get_active_manifest() or {}
    results = reader.get_validation_results() or {}
    failures = [f.get("code", "?") for f in (results.get("activeManifest") or {}).get("failure", [])]
    assertions = {a.get("label"): a.get("data") for a in manifest.get("assertions", [])}
    actions = (assertions.get("c2pa.actions.v2") or assertions.get("c2pa.actions") or {}).get("actions", [])
    info = manifest.get("signature_info") or {}
    return C2paReport(
        present=True,
        validation_state=reader.get_validation_state(),
        ai_generated=any(a.get("action") == "c2pa.created" and a.get("digitalSourceType") == DIGITAL_SOURCE_TYPE
                         for a in actions),
        signer=f"{info.get('common_name')} (issuer {info.get('issuer')})" if info else None,
        failures=failures,
        record=assertions.get(ASSERTION_LABEL),
    )


def describe(report: C2paReport) -> str:
    """One line for people."""
    if not report.present:
        return f"no C2PA manifest{f' ({report.error})' if report.error else ''}"
    extra = f"; failures: {', '.join(report.failures)}" if report.failures else ""
    return f"{report.validation_state}, signed by {report.signer}, AI-generated: {report.ai_generated}{extra}"

