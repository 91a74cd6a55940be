"""The HTML report: self-contained, and it shows the images in a real headless browser."""

from __future__ import annotations

import asyncio
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from agents.messages import Intent
from pipelines.campaign import CampaignRunner, CampaignSpec
from pipelines.report import write_report
from pipelines.store import CampaignStore
from tests.fakes import FakeRenderer, ScriptedLLM


@pytest.fixture(scope="module")
def report_path(tmp_path_factory):
    d = tmp_path_factory.mktemp("report")
    spec = CampaignSpec(name="r", intents=[Intent(id=f"i{k}", text=f"a red apple {k}") for k in range(3)],
                        search={"rounds": 2, "max_images": 10})
    renderer = FakeRenderer()
    store = CampaignStore(str(d))
    asyncio.run(CampaignRunner(spec, spec.search_config({}), renderer, ScriptedLLM(renderer), store).run())
    return d, write_report(store)


def test_report_is_self_contained(report_path):
    d, path = report_path
    html = open(path).read()
    assert html.count('src="data:image/png;base64,') >= 3 * 2  # best and baseline of every intent, embedded
    assert 'src="images/' not in html  # small campaigns link nothing out: the file opens anywhere
    assert html.count('<div class="intent"') == 3 and "<svg" in html and "lineage" in html


@pytest.mark.slow
def test_report_renders_with_images_in_headless_chromium(report_path, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    assert browser, "chromium is missing: scripts/setup installs the Debian package 'chromium'"
    _, path = report_path
    shot = tmp_path / "report.png"
    subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,1400", f"--screenshot={shot}",
         f"file://{path}"],
        check=True, capture_output=True, timeout=120,
    )
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (1400, 1200)
    assert pixels.std() > 20  # not a blank page
    # the embedded images are drawn: the fake renderer's saturated colour blocks cover a large area
    saturated = (pixels.max(axis=2).astype(int) - pixels.min(axis=2)) > 60
    assert saturated.mean() > 0.05
