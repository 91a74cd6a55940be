"""The published diffusion architectures with random weights, for the GPU benchmarks (:mod:`benchmarks.gpu.run_all`,
``tests/test_gpu.py``): SD1.5, SDXL base and FLUX.1-schnell from their real configurations.

Compute does not depend on the weights, so a random-weight pipeline of the real shapes stands in for the real model
without a hub. :func:`build_random_pipeline` builds one in memory directly on the GPU (no save, no load, no host copy);
with ``tiny=True`` it builds the same architecture at test shapes through the same builders
(:func:`serving.tiny_models.build_sd_pipeline`, :func:`serving.tiny_models.build_flux_pipeline`), which is what CI
runs on the CPU. The tiny test models themselves live in :mod:`serving.tiny_models`.
"""

from __future__ import annotations

import os
from pathlib import Path

from serving.tiny_models import (
    TINY_FLUX,
    TINY_SD,
    TINY_SDXL,
    build_flux_pipeline,
    build_sd_pipeline,
)

# The Stable Diffusion VAE (SD1.5 and SDXL share the architecture; SDXL rescales latents differently).
_SD_VAE = dict(
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    layers_per_block=2,
    latent_channels=4,
)

SD15 = dict(
    unet=dict(
        sample_size=64,
        layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=768,
        attention_head_dim=8,
    ),
    vae=dict(_SD_VAE, sample_size=512),
    text=dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
              hidden_act="quick_gelu"),
)
"""Stable Diffusion 1.5: 860M UNet, CLIP ViT-L/14 text encoder, SD VAE."""

SDXL = dict(
    unet=dict(
        sample_size=128,
        layers_per_block=2,
        block_out_channels=(320, 640, 1280),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(5, 10, 20),
        transformer_layers_per_block=(1, 2, 10),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=2816,  # 6 x 256 + 1280
        cross_attention_dim=2048,  # 768 + 1280
    ),
    vae=dict(_SD_VAE, sample_size=1024, scaling_factor=0.13025),
    text=dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
              num_attention_heads=12, hidden_act="quick_gelu", projection_dim=768),
    text_2=dict(vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                num_attention_heads=20, hidden_act="gelu", projection_dim=1280),
)
"""SDXL base: 2.6B UNet, CLIP ViT-L + OpenCLIP bigG text encoders, SDXL VAE."""

FLUX_SCHNELL = dict(
    # black-forest-labs/FLUX.1-schnell transformer/config.json: 19 double + 38 single MMDiT blocks, 24 heads x 128
    transformer=dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
                     num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768,
                     guidance_embeds=False, axes_dims_rope=[16, 56, 56]),
    # openai/clip-vit-large-patch14's text tower
    text=dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12, vocab_size=49408,
              hidden_act="quick_gelu", projection_dim=768),
    # google/t5-v1_1-xxl's encoder
    t5=dict(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
            feed_forward_proj="gated-gelu", dense_act_fn="gelu_new", is_gated_act=True, layer_norm_epsilon=1e-6,
            relative_attention_num_buckets=32, relative_attention_max_distance=128, tie_word_embeddings=False),
    # the FLUX VAE: 16 latent channels, no quant convs
    vae=dict(_SD_VAE, latent_channels=16, sample_size=1024, use_quant_conv=False, use_post_quant_conv=False,
             shift_factor=0.1159, scaling_factor=0.3611),
    scheduler=dict(num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=False, base_shift=0.5, max_shift=1.15,
                   base_image_seq_len=256, max_image_seq_len=4096),
)
"""FLUX.1-schnell: 11.9B MMDiT transformer, T5-XXL (4.8B) + CLIP-L text encoders, 16-channel VAE, 1-4 steps."""


def make_random_sd15(out: str | os.PathLike, seed: int = 0) -> Path:
    """A Stable Diffusion 1.5-architecture pipeline with random weights, saved (several GB in float32: build it on the
    machine that will run it, or build it in memory there with :func:`build_random_pipeline`)."""
    out = Path(out)
    build_sd_pipeline(seed=seed, **SD15).save_pretrained(out)
    return out


ARCHITECTURES = {"sd15": (SD15, TINY_SD), "sdxl": (SDXL, TINY_SDXL), "flux": (FLUX_SCHNELL, TINY_FLUX)}
"""Architecture name -> (real configuration, the same architecture at test shapes)."""


def build_random_pipeline(arch: str, tiny: bool = False, device: str = "cpu", dtype=None, seed: int = 0):
    """A random-weight pipeline of a real architecture ('sd15', 'sdxl', 'flux'), built in memory directly on
    ``device`` in ``dtype``: no save, no load, no host copy. ``tiny`` builds the same architecture at test shapes
    through the same code (what CI runs). Compute does not depend on the weights, so this stands in for the real
    model in GPU benchmarks without a hub: FLUX.1-schnell (12B transformer + T5-XXL, ~34 GB in bf16) builds in
    seconds on an H100."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {sorted(ARCHITECTURES)}")
    config = ARCHITECTURES[arch][1 if tiny else 0]
    build = build_flux_pipeline if arch == "flux" else build_sd_pipeline
    return build(**config, seed=seed, device=device, dtype=dtype)
