"""The engine tests on CUDA with a random-weight model of a real architecture (SD1.5). Skipped without a GPU.

On a lent GPU machine: ``python -m pytest -m gpu tests/test_gpu.py`` (torch + diffusers suffice; vLLM is not needed).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from agents.messages import RenderRequest

pytestmark = [pytest.mark.gpu, pytest.mark.slow]


@pytest.fixture(scope="module")
def sd15_engine(tmp_path_factory):
    from serving.config import DiffusionEngineConfig
    from serving.engines import DiffusionEngine
    from serving.tiny_models import make_random_sd15

    path = make_random_sd15(tmp_path_factory.mktemp("sd15"))
    return DiffusionEngine(DiffusionEngineConfig(model=str(path), device="cuda", dtype="float16"))


def test_sd15_arch_batch_on_cuda(sd15_engine):
    reqs = [RenderRequest(request_id=f"r{i}", prompt=f"apple {i}", seed=i, steps=4, width=512, height=512)
            for i in range(4)]
    results = sd15_engine.render(reqs)
    assert [r.request_id for r in results] == ["r0", "r1", "r2", "r3"]
    assert {r.batch_size for r in results} == {4}
    assert Image.open(io.BytesIO(results[0].png)).size == (512, 512)
    again = sd15_engine.render(reqs[:1])[0]  # the same seed alone: the same image up to fp16 batch-size noise
    a = np.asarray(Image.open(io.BytesIO(again.png)), dtype=np.int16)
    b = np.asarray(Image.open(io.BytesIO(results[0].png)), dtype=np.int16)
    assert np.abs(a - b).mean() < 2.0
