"""Provenance: stamp writes metadata + watermark (+ C2PA where configured); verify and `promptbeam verify` read them."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import pytest
import typer
from PIL import Image, PngImagePlugin
from typer.testing import CliRunner

from pipelines.testing.safety_data import decode, jpeg, make_credentials, png, scene
from serving.safety.credentials import C2paConfig, C2paError
from serving.safety.images import ImageDecodeError
from serving.safety.provenance import RECORD_KEY, ProvenanceConfig, Stamper, verify
from serving.safety.record import DIGITAL_SOURCE_TYPE, ProvenanceRecord
from serving.safety.watermark import WatermarkConfig

RECORD = ProvenanceRecord(
    campaign="parti", intent="p-0007", candidate="r1-b0-c2-s0", prompt='a red <apple> & "pear" on a table, ünïcode ✓',
    negative_prompt="blurry", seed=1234, model="stabilityai/sd-turbo", width=64, height=64, steps=4,
    created="2026-11-27T10:00:00+00:00",
)


@pytest.fixture(scope="module")
def stamper() -> Stamper:
    return Stamper()


@pytest.fixture(scope="module")
def stamped(stamper) -> bytes:
    return stamper.stamp(scene(64, seed=11), RECORD).png


def test_verify_reads_back_what_stamp_wrote(stamped):
    report = verify(stamped)
    assert report.metadata_present and report.record == RECORD
    assert report.xmp_digital_source_type == DIGITAL_SOURCE_TYPE
    assert report.watermark.present and report.watermark.payload == RECORD.watermark_id()
    assert report.watermark_matches_record is True
    assert report.stamped_watermark == {"scheme": "promptbeam-stdm-v1", "id": f"{RECORD.watermark_id():08x}",
                                        "embedded": True, "error": None}
    assert not report.c2pa.present
    assert report.ai_generated and report.found


def test_png_carries_standard_keys_for_other_tools(stamped):
    with Image.open(io.BytesIO(stamped)) as img:
        text = dict(img.text)
    assert text["Software"] == RECORD.generator
    assert text["Source"] == RECORD.model
    assert text["Description"] == RECORD.prompt
    assert text["Creation Time"] == "Fri, 27 Nov 2026 10:00:00 +0000"
    assert "trainedAlgorithmicMedia" in text["XML:com.adobe.xmp"] and "&lt;apple&gt;" in text["XML:com.adobe.xmp"]
    assert json.loads(text[RECORD_KEY])["ai_generated"] is True


def test_unstamped_image_reads_as_such():
    report = verify(png(scene(64, seed=12)))
    assert not report.metadata_present and report.record is None
    assert not report.watermark.present and report.watermark_matches_record is None
    assert not report.c2pa.present and not report.ai_generated and not report.found


def test_watermark_outlives_stripped_metadata_and_jpeg(stamper):
    stripped = png(decode(stamper.stamp(scene(64, seed=13), RECORD).png))  # pixels only
    report = verify(stripped)
    assert report.record is None and report.watermark.payload == RECORD.watermark_id()
    assert report.watermark_matches_record is None and report.ai_generated
    large = stamper.stamp(scene(256, seed=14), RECORD).png
    report = verify(jpeg(decode(large), 80))
    assert report.format == "JPEG" and report.watermark.payload == RECORD.watermark_id()


def test_metadata_moved_onto_another_image_is_caught(stamper, stamped):
    other = stamper.stamp(scene(64, seed=15), RECORD.model_copy(update={"seed": 99})).png
    with Image.open(io.BytesIO(stamped)) as img:
        info = PngImagePlugin.PngInfo()
        info.add_itxt(RECORD_KEY, img.text[RECORD_KEY])
    buf = io.BytesIO()
    Image.open(io.BytesIO(other)).save(buf, format="PNG", pnginfo=info)  # other's pixels, RECORD's metadata
    report = verify(buf.getvalue())
    assert report.record == RECORD and report.watermark.present
    assert report.watermark_matches_record is False


def test_small_images_get_metadata_and_say_why_no_watermark(stamper):
    out = stamper.stamp(scene(32, seed=16), RECORD)
    assert not out.watermarked and "at least 64x64" in out.watermark_error
    report = verify(out.png)
    assert report.record == RECORD and not report.watermark.present
    assert report.stamped_watermark["embedded"] is False
    assert any("stamper: images must be at least 64x64" in line for line in report.lines())


def test_same_render_same_pixels_whenever_it_is_stamped(stamper):
    later = RECORD.model_copy(update={"created": "2027-01-01T00:00:00+00:00"})
    assert later.watermark_id() == RECORD.watermark_id()
    assert RECORD.model_copy(update={"seed": 1235}).watermark_id() != RECORD.watermark_id()
    image = scene(64, seed=23)
    first, second = stamper.stamp(image, RECORD).png, stamper.stamp(image, later).png
    assert first != second and (decode(first) == decode(second)).all()  # the metadata differs, the pixels do not
    assert verify(second).record == later and verify(second).watermark_matches_record


def test_odd_prompts_round_trip(stamper):
    record = RECORD.model_copy(update={"prompt": "nul\x00 tab\t bell\x07 <x:y/> ]]> 𝔘𝔫𝔦 " + "long " * 800})
    report = verify(stamper.stamp(scene(64, seed=17), record).png)
    assert report.record == record and report.watermark_matches_record


def test_broken_metadata_is_reported_not_raised():
    info = PngImagePlugin.PngInfo()
    info.add_itxt(RECORD_KEY, "{not json")
    buf = io.BytesIO()
    Image.fromarray(scene(64, seed=18)).save(buf, format="PNG", pnginfo=info)
    report = verify(buf.getvalue())
    assert report.metadata_present and report.record is None and "JSONDecodeError" in report.metadata_error
    with pytest.raises(ImageDecodeError, match="not a known image format"):
        verify(b"GIF89a-but-not-really")


def test_watermark_can_be_disabled_and_keyed(stamped):
    out = Stamper(ProvenanceConfig(watermark=None)).stamp(scene(64, seed=19), RECORD)
    assert not out.watermarked and not verify(out.png).watermark.present
    keyed = Stamper(ProvenanceConfig(watermark=WatermarkConfig(key="secret"))).stamp(scene(64, seed=20), RECORD).png
    assert not verify(keyed).watermark.present
    assert verify(keyed, ProvenanceConfig(watermark=WatermarkConfig(key="secret"))).watermark_matches_record


# -- C2PA --------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def credentials(tmp_path_factory) -> tuple[Path, Path, Path]:
    return make_credentials(tmp_path_factory.mktemp("c2pa"))


@pytest.fixture(scope="module")
def signed(credentials) -> bytes:
    chain, key, _ = credentials
    stamper = Stamper(ProvenanceConfig(c2pa=C2paConfig(cert_chain=chain, private_key=key)))
    out = stamper.stamp(scene(64, seed=21), RECORD)
    assert out.signed and out.watermarked
    return out.png


def test_c2pa_signed_image_verifies_as_trusted_ai_generated(signed, credentials):
    report = verify(signed, ProvenanceConfig(trust_anchors=credentials[2]))
    assert report.c2pa.present and report.c2pa.validation_state == "Trusted" and not report.c2pa.failures
    assert report.c2pa.ai_generated and "promptbeam signer" in report.c2pa.signer
    assert ProvenanceRecord.model_validate(report.c2pa.record) == RECORD
    assert report.record == RECORD and report.watermark_matches_record  # the other layers survive signing


def test_c2pa_without_the_trust_anchor_is_valid_but_not_trusted(signed):
    report = verify(signed).c2pa
    assert report.validation_state == "Valid" and report.failures == ["signingCredential.untrusted"]


def with_pixels_changed(data: bytes) -> bytes:
    """The same PNG, chunk for chunk (the C2PA manifest included), with one pixel changed in a valid IDAT."""
    pixels = decode(data).copy()
    pixels[10, 10] ^= 0xFF
    raw = b"".join(b"\x00" + row.tobytes() for row in pixels)  # filter type 0 per scanline
    chunks, pos, idat_done = [data[:8]], 8, False
    while pos < len(data):
        length = struct.unpack(">I", data[pos : pos + 4])[0]
        kind, end = data[pos + 4 : pos + 8], pos + 12 + length
        if kind != b"IDAT":
            chunks.append(data[pos:end])
        elif not idat_done:
            body = zlib.compress(raw)
            chunks.append(struct.pack(">I", len(body)) + b"IDAT" + body
                          + struct.pack(">I", zlib.crc32(b"IDAT" + body)))
            idat_done = True
        pos = end
    return b"".join(chunks)


def test_c2pa_detects_changed_pixels(signed, credentials):
    tampered = with_pixels_changed(signed)
    assert (decode(tampered) != decode(signed)).sum() == 3
    report = verify(tampered, ProvenanceConfig(trust_anchors=credentials[2]))
    assert report.c2pa.validation_state == "Invalid" and "assertion.dataHash.mismatch" in report.c2pa.failures


def test_self_signed_certificate_signs_but_is_trusted_only_as_an_anchor(tmp_path):
    chain, key, _ = make_credentials(tmp_path, self_signed=True)
    data = Stamper(ProvenanceConfig(c2pa=C2paConfig(cert_chain=chain, private_key=key))).stamp(scene(64), RECORD).png
    assert verify(data).c2pa.failures == ["signingCredential.untrusted"]
    assert verify(data, ProvenanceConfig(trust_anchors=chain)).c2pa.validation_state == "Trusted"


def test_bad_credentials_fail_at_start_with_the_paths(tmp_path, credentials):
    chain, key, _ = make_credentials(tmp_path, key_id=False)
    with pytest.raises(C2paError, match="chain.pem.*certificate is invalid"):
        Stamper(ProvenanceConfig(c2pa=C2paConfig(cert_chain=chain, private_key=key)))
    with pytest.raises(C2paError, match="missing.pem"):
        Stamper(ProvenanceConfig(c2pa=C2paConfig(cert_chain=credentials[0], private_key=tmp_path / "missing.pem")))


# -- promptbeam verify -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli() -> typer.Typer:
    """The sub-app mounted the way pipelines/cli.py mounts it."""
    from serving.safety.cli import app as verify_app

    app = typer.Typer()

    @app.command()
    def other() -> None:  # a second command, so that typer keeps sub-commands by name
        pass

    app.add_typer(verify_app)
    return app


def test_cli_exit_codes_and_output(cli, tmp_path, stamped, signed, credentials):
    runner = CliRunner()
    files = {"stamped.png": stamped, "plain.png": png(scene(64, seed=22)), "junk.png": b"junk", "signed.png": signed}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    ok = runner.invoke(cli, ["verify", str(tmp_path / "stamped.png")])
    assert ok.exit_code == 0 and "matches the metadata" in ok.output and "AI-generated: yes" in ok.output
    assert runner.invoke(cli, ["verify", str(tmp_path / "plain.png")]).exit_code == 1
    junk = runner.invoke(cli, ["verify", str(tmp_path / "junk.png")])
    assert junk.exit_code == 2 and "not a known image format" in junk.output
    trusted = runner.invoke(cli, ["verify", str(tmp_path / "signed.png"), "--trust-anchors", str(credentials[2]),
                                  "--json"])
    assert trusted.exit_code == 0 and json.loads(trusted.output)["c2pa"]["validation_state"] == "Trusted"
    (tmp_path / "tampered.png").write_bytes(with_pixels_changed(signed))
    assert runner.invoke(cli, ["verify", str(tmp_path / "tampered.png")]).exit_code == 3
