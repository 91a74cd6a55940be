"""The torchvision shim: what it maps, and that it stays off where torchvision works."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from serving.compat import torchvision_shim


def _run(code: str, flag: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PROMPTBEAM_TORCHVISION_SHIM": flag}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                          timeout=300)


@pytest.mark.slow
def test_shim_maps_torchvision_image_processors_to_pil_ones():
    proc = _run(
        """
        from serving.compat.torchvision_shim import ensure_installed
        assert ensure_installed()
        from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize, Qwen2VLImageProcessor
        from transformers.models.qwen2_vl import image_processing_qwen2_vl as m
        print(m.__promptbeam_shim__, Qwen2VLImageProcessor.__name__, smart_resize(56, 56))
        import os; print("_site" in os.environ["PYTHONPATH"])
        """,
        "1",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout.splitlines()
    assert out[0].startswith("transformers.models.qwen2_vl.image_processing_pil_qwen2_vl Qwen2VLImageProcessorPil")
    assert out[1] == "True"  # children (vLLM's inspection and engine processes) get the hook too


def test_shim_can_be_switched_off(monkeypatch):
    monkeypatch.setenv("PROMPTBEAM_TORCHVISION_SHIM", "0")
    assert torchvision_shim.shim_needed() is False
    monkeypatch.setenv("PROMPTBEAM_TORCHVISION_SHIM", "1")
    assert torchvision_shim.shim_needed() is True
