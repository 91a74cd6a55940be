"""Train the world's text-to-image model inside a wall-clock budget and save it as a diffusers pipeline.

    python -m pipelines.world.train --out DIR --device cuda|cpu --minutes N [--seed S]
    promptbeam world train --out DIR [--device cuda|cpu] [--minutes N]      (the same function)

1. **Captions**: a pool of random world specs (the six GenEval tags, uniformly) with one training wording each
   (:func:`pipelines.world.grammar.training_wording`: frequent forms, a few rare ones, never a held-out one),
   tokenized once with the CLIP tokenizer and kept on the training device with each spec's objects.
2. **VAE phase** (``vae_share`` of the budget): the autoencoder learns to reconstruct random 32x32 crops of freshly
   drawn scenes (object pixels weighted up); the spread of its latents sets ``scaling_factor``.
3. **Diffusion phase** (the rest, less the time to save): every step draws pool entries, samples new layouts and
   rasterizes them *on the training device* (the GPU never waits for the CPU), encodes them with the frozen VAE
   encoder (posterior means), and trains the UNet and the text encoder together on v-prediction, with captions
   dropped ``caption_dropout`` of the time (classifier-free guidance). Learning rate: linear warmup, then cosine decay
   over the remaining *time*. An exponential moving average of the weights is what gets saved. The VAE decoder keeps
   learning on crops of a quarter of each batch (the encoder, and so the latent space, stays fixed).
4. A progress line every ``log_every_s`` (step, losses, images/s), an intermediate save every ``save_every_min``
   (a run cut short still leaves a usable model), and the final save: ``save_pretrained`` with fp16 weights plus
   ``training.json`` (config, steps, images seen, losses, hardware).

Imports only torch, diffusers, transformers, numpy and pydantic besides the world's own modules (no typer, rich or
scipy): it runs as is on the project's GPU machine.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import sys
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from pipelines.world.model import WorldModelConfig
from serving.files import atomic_directory

TRAINING_INFO = "training.json"


class TrainConfig(BaseModel):
    """One training run. Batch size and learning rate default per device (see :meth:`resolved`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    out: str = Field(description="Directory the trained pipeline is written to (replaced at each save).")
    device: Literal["cpu", "cuda"] = "cuda"
    minutes: float = Field(default=5.0, gt=0, le=600, description="Wall-clock budget: build, both phases and saves.")
    seed: int = Field(default=0, ge=0)
    batch_size: int | None = Field(default=None, ge=2, le=4096, description="None: 256 on cuda, 32 on cpu.")
    lr: float = Field(default=5e-4, gt=0, le=1e-2, description="Peak learning rate of the diffusion phase.")
    warmup_steps: int = Field(default=100, ge=0, le=10_000)
    final_lr_fraction: float = Field(default=0.05, ge=0, le=1, description="LR at the end of the cosine decay.")
    vae_share: float = Field(default=0.12, gt=0, lt=0.5, description="Share of the budget spent on the VAE.")
    vae_lr: float = Field(default=2e-3, gt=0, le=1e-2)
    decoder_lr: float = Field(default=5e-4, ge=0, le=1e-2,
                              description="Decoder refinement during the diffusion phase (0 turns it off).")
    vae_kl_weight: float = Field(default=1e-5, ge=0, le=1.0)
    caption_dropout: float = Field(default=0.1, ge=0, lt=1, description="Share of empty captions (for CFG).")
    ema_decay: float = Field(default=0.995, ge=0, lt=1, description="EMA of the weights that get saved.")
    pool_size: int = Field(default=60_000, ge=64, le=2_000_000, description="Captioned specs drawn at start.")
    extra_colors: float = Field(default=0.3, ge=0, le=1,
                                description="Share of colour-free specs whose caption names the colours anyway.")
    log_every_s: float = Field(default=10.0, gt=0)
    save_every_min: float = Field(default=3.0, gt=0, description="Intermediate saves (0 < x); the last one is final.")
    save_reserve_s: float = Field(default=20.0, ge=0, description="Seconds kept at the end for the final save.")
    threads: int | None = Field(default=None, ge=1, le=256, description="CPU threads for torch (None: torch's).")
    init_from: str | None = Field(default=None, description="Continue from a saved world pipeline: no VAE phase; "
                                  "the model config is the saved one's.")
    model: WorldModelConfig = Field(default_factory=WorldModelConfig)

    def resolved_batch(self) -> int:
        return self.batch_size or (256 if self.device == "cuda" else 32)


def log(msg: str) -> None:
    print(f"[world.train {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class CaptionPool:
    """Specs with one training caption each, as device tensors: token ids and the objects to draw."""

    def __init__(self, cfg: TrainConfig, tokenizer, device):
        import torch

        from pipelines.world.grammar import training_wording
        from pipelines.world.scenes import TAGS, attributes_to_batch, sample_spec, scene_attributes

        rng = random.Random(cfg.seed)
        attrs, texts = [], []
        for _ in range(cfg.pool_size):
            spec = sample_spec(rng.choice(TAGS), rng, extra_colors=cfg.extra_colors)
            attrs.append(scene_attributes(spec, rng))
            texts.append(training_wording(spec, rng).text)
        self.texts = texts
        self.scenes = attributes_to_batch(attrs).to(device)
        self.ids = self.tokenize(tokenizer, texts).to(device)
        self.empty_ids = self.tokenize(tokenizer, [""]).to(device)  # the unconditional caption, as the pipeline pads it
        self.size = len(texts)
        self.device = device
        self.torch = torch

    @staticmethod
    def tokenize(tokenizer, texts: list[str]):
        # exactly as StableDiffusionPipeline.encode_prompt does
        return tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                         return_tensors="pt").input_ids

    def draw(self, n: int, generator, dropout: float = 0.0):
        """n random entries: (images in [-1, 1], token ids with captions dropped at rate ``dropout``)."""
        from pipelines.world.scenes import rasterize, sample_layouts

        torch = self.torch
        idx = torch.randint(0, self.size, (n,), generator=generator, device=self.device)
        scenes = sample_layouts(self.scenes.index(idx), generator)
        images = rasterize(scenes) * 2 - 1
        ids = self.ids[idx]
        if dropout > 0:
            drop = torch.rand(n, generator=generator, device=self.device) < dropout
            ids = torch.where(drop.view(n, 1), self.empty_ids, ids)
        return images, ids


class Ema:
    """Exponential moving average of parameters (decay warms up as min(decay, (1 + n) / (10 + n)))."""

    def __init__(self, modules, decay: float):
        import torch

        self.params = [p for m in modules for p in m.parameters()]
        self.shadow = [p.detach().clone().float() for p in self.params]
        self.decay = decay
        self.n = 0
        self.torch = torch

    def update(self) -> None:
        self.n += 1
        d = min(self.decay, (1 + self.n) / (10 + self.n))
        with self.torch.no_grad():
            self.torch._foreach_lerp_(self.shadow, [p.detach().float() for p in self.params], 1 - d)

    def swap(self) -> None:
        """Exchange live and averaged weights (call twice to restore)."""
        with self.torch.no_grad():
            for p, s in zip(self.params, self.shadow):
                tmp = p.detach().clone()
                p.copy_(s)
                s.copy_(tmp)


def lr_at(peak: float, step: int, warmup: int, progress: float, floor: float) -> float:
    """Linear warmup over ``warmup`` steps, then cosine decay from ``peak`` to ``floor * peak`` as ``progress`` (the
    share of the phase's time spent) goes from 0 to 1."""
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def _save(pipe, out: Path, info: dict) -> None:
    """Write the pipeline next to ``out`` and swap it in, so a crash mid-save never leaves a broken model."""
    from pipelines.world.model import save_pipeline

    with atomic_directory(out) as staged:
        save_pipeline(pipe, staged)
        (staged / TRAINING_INFO).write_text(json.dumps(info, indent=2))


VAE_CROP = 32
"""The VAE trains on random 32x32 crops of drawn scenes: a quarter of the cost of a full image (it is convolutional)."""
FOREGROUND_WEIGHT = 4.0
"""Extra loss weight on object pixels: objects cover ~5-15% of a scene, and their colours are what the judge reads."""


def _reconstruction_loss(rec, x, background):
    """MSE + L1/2, object pixels (those away from the background colour) weighted up by FOREGROUND_WEIGHT."""
    weight = 1 + FOREGROUND_WEIGHT * ((x - background).abs().sum(1, keepdim=True) > 0.1).float()
    err = rec - x
    return (weight * err.pow(2)).mean() + 0.5 * (weight * err.abs()).mean()


def train_vae(cfg: TrainConfig, vae, pool: CaptionPool, deadline: float, generator, autocast) -> dict:
    """Phase 1: reconstruction (MSE + L1, object pixels weighted up) with a small KL term on random crops, then the
    latent scaling factor from full images."""
    import torch

    from pipelines.world.scenes import BACKGROUND

    batch = cfg.resolved_batch()
    background = (torch.tensor(BACKGROUND, dtype=torch.float32, device=pool.device) / 127.5 - 1).view(1, 3, 1, 1)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    start, step, last_log, images = time.monotonic(), 0, time.monotonic(), 0
    loss_sum = torch.zeros((), device=pool.device)
    budget = deadline - start
    vae.train()
    while time.monotonic() < deadline:
        progress = (time.monotonic() - start) / budget
        for g in opt.param_groups:
            g["lr"] = lr_at(cfg.vae_lr, step, 20, progress, cfg.final_lr_fraction)
        x, _ = pool.draw(batch, generator)
        ox, oy = (int(v) for v in torch.randint(0, x.shape[-1] - VAE_CROP + 1, (2,)))  # CPU RNG: no GPU sync
        x = x[:, :, oy : oy + VAE_CROP, ox : ox + VAE_CROP]
        with autocast():
            post = vae.encode(x).latent_dist
            rec = vae.decode(post.sample()).sample.float()
        loss = _reconstruction_loss(rec, x, background) + cfg.vae_kl_weight * post.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        loss_sum += loss.detach()
        step += 1
        images += batch
        now = time.monotonic()
        if now - last_log >= cfg.log_every_s:
            log(f"vae step {step} loss {loss_sum.item() / step:.4f} (mean so far) {images / (now - start):.0f} img/s")
            last_log = now
    vae.eval()
    with torch.no_grad(), autocast():
        # the spread of the latents the UNet will see (posterior means), so they enter diffusion at unit scale
        lat = torch.cat([vae.encode(pool.draw(batch, generator)[0]).latent_dist.mean.float() for _ in range(4)])
    scaling = float(1.0 / lat.std())
    vae.register_to_config(scaling_factor=scaling)
    with torch.no_grad(), autocast():
        x, _ = pool.draw(batch, generator)
        rec_err = (vae.decode(vae.encode(x).latent_dist.mean).sample.float() - x).abs().mean().item()
    log(f"vae done: {step} steps, {images} images, scaling_factor {scaling:.3f}, reconstruction L1 {rec_err:.4f}")
    return {"steps": step, "images": images, "scaling_factor": scaling, "reconstruction_l1": rec_err,
            "seconds": time.monotonic() - start}


def train(cfg: TrainConfig) -> Path:
    """Run the whole budgeted training; returns the output directory."""
    import torch
    from diffusers import DDPMScheduler  # noqa: F401  (fail early if diffusers is missing)

    from pipelines.world.model import build_noise_scheduler, build_pipeline
    from pipelines.world.scenes import BACKGROUND

    t0 = time.monotonic()
    end = t0 + cfg.minutes * 60
    out = Path(cfg.out)
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but torch sees no CUDA device")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = torch.device(cfg.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True

    def autocast():
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")

    torch.manual_seed(cfg.seed)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    if cfg.init_from:
        from diffusers import StableDiffusionPipeline

        pipe = StableDiffusionPipeline.from_pretrained(cfg.init_from, dtype=torch.float32)
    else:
        pipe = build_pipeline(cfg.model, seed=cfg.seed)
    vae, unet, text = pipe.vae.to(device), pipe.unet.to(device), pipe.text_encoder.to(device)
    pool = CaptionPool(cfg, pipe.tokenizer, device)
    batch = cfg.resolved_batch()
    hardware = torch.cuda.get_device_name(0) if device.type == "cuda" else f"{platform.processor() or 'cpu'}, " \
        f"{torch.get_num_threads()} threads"
    log(f"device {device} ({hardware}), batch {batch}, budget {cfg.minutes:.2f} min; "
        f"{pool.size} captions ready after {time.monotonic() - t0:.1f}s, e.g. {pool.texts[0]!r}")

    # 1. VAE (unless continuing from a trained pipeline)
    if cfg.init_from:
        vae_info = {"init_from": cfg.init_from, "scaling_factor": vae.config.scaling_factor}
        log(f"continuing from {cfg.init_from}")
    else:
        vae_deadline = time.monotonic() + cfg.vae_share * (end - time.monotonic())
        vae_info = train_vae(cfg, vae, pool, vae_deadline, generator, autocast)
    # The encoder is frozen from here on (the UNet's latent space must stay put); the decoder keeps learning.
    vae.requires_grad_(False)
    vae.eval()
    decoder_params = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    dec_opt = None
    if cfg.decoder_lr > 0:
        for prm in decoder_params:
            prm.requires_grad_(True)
        dec_opt = torch.optim.AdamW(decoder_params, lr=cfg.decoder_lr, weight_decay=0.0)
    background = (torch.tensor(BACKGROUND, dtype=torch.float32, device=device) / 127.5 - 1).view(1, 3, 1, 1)

    # 2. Diffusion: UNet + text encoder from scratch
    noise_sched = build_noise_scheduler()
    alphas = noise_sched.alphas_cumprod.to(device)
    scaling = vae.config.scaling_factor
    params = list(unet.parameters()) + list(text.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01, betas=(0.9, 0.99))
    unet.train()
    text.train()
    ema = Ema([unet, text], cfg.ema_decay)
    start = time.monotonic()
    stop = end - cfg.save_reserve_s
    budget = max(1.0, stop - start)
    step, images, last_log, last_save = 0, 0, start, start
    loss_sum = torch.zeros((), device=device)
    window = torch.zeros((), device=device)
    dec_sum = torch.zeros((), device=device)
    window_steps, window_start = 0, start
    info = {"config": cfg.model_dump(mode="json"), "hardware": hardware, "vae": vae_info,
            "python": sys.version.split()[0], "torch": torch.__version__}
    if cfg.init_from:  # a continued run: keep the whole history, so the model card can state the total training time
        parent = Path(cfg.init_from) / TRAINING_INFO
        if parent.exists():
            info["parent"] = json.loads(parent.read_text())

    def snapshot(final: bool) -> None:
        ema.swap()
        _save(pipe, out, {**info, "final": final, "diffusion": {
            "steps": step, "images": images, "seconds": time.monotonic() - start,
            "loss_mean": loss_sum.item() / max(1, step)}, "total_seconds": time.monotonic() - t0})
        ema.swap()

    while time.monotonic() < stop:
        progress = (time.monotonic() - start) / budget
        lr = lr_at(cfg.lr, step, cfg.warmup_steps, progress, cfg.final_lr_fraction)
        for g in opt.param_groups:
            g["lr"] = lr
        x, ids = pool.draw(batch, generator, dropout=cfg.caption_dropout)
        with torch.no_grad(), autocast():
            # Posterior means, not samples: with the small KL weight, channels the decoder does not use carry
            # posterior noise of std ~1, which the UNet would otherwise have to learn to reproduce.
            latents = vae.encode(x).latent_dist.mean.float() * scaling
        noise = torch.randn(latents.shape, generator=generator, device=device)
        t = torch.randint(0, noise_sched.config.num_train_timesteps, (batch,), generator=generator, device=device)
        a = alphas[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * latents + (1 - a).sqrt() * noise
        target = a.sqrt() * noise - (1 - a).sqrt() * latents  # v-prediction
        with autocast():
            cond = text(ids)[0]
            pred = unet(noisy, t, encoder_hidden_states=cond).sample
        loss = (pred.float() - target).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema.update()
        if dec_opt is not None:
            # decoder refinement on a quarter of the batch, 32x32 crops of this step's latents
            for g in dec_opt.param_groups:
                g["lr"] = cfg.decoder_lr * lr / cfg.lr
            k, c = max(1, batch // 4), VAE_CROP // 4
            ox, oy = (int(v) for v in torch.randint(0, latents.shape[-1] - c + 1, (2,)))
            xc = x[:k, :, 4 * oy : 4 * (oy + c), 4 * ox : 4 * (ox + c)]
            with autocast():
                rec = vae.decode(latents[:k, :, oy : oy + c, ox : ox + c] / scaling).sample.float()
            dec_loss = _reconstruction_loss(rec, xc, background)
            dec_opt.zero_grad(set_to_none=True)
            dec_loss.backward()
            dec_opt.step()
            dec_sum += dec_loss.detach()
        loss_sum += loss.detach()
        window += loss.detach()
        step += 1
        window_steps += 1
        images += batch
        now = time.monotonic()
        if now - last_log >= cfg.log_every_s:
            log(f"step {step} loss {window.item() / window_steps:.4f} decoder {dec_sum.item() / window_steps:.4f} "
                f"lr {lr:.2e} "
                f"{window_steps * batch / (now - window_start):.0f} img/s ({images} images, "
                f"{now - t0:.0f}s of {cfg.minutes * 60:.0f}s)")
            window.zero_()
            dec_sum.zero_()
            window_steps, window_start, last_log = 0, now, now
        if now - last_save >= cfg.save_every_min * 60 and stop - now > 60:
            snapshot(final=False)
            log(f"saved intermediate model at step {step} to {out}")
            last_save = time.monotonic()
    if device.type == "cuda":
        torch.cuda.synchronize()
    unet.eval()
    text.eval()
    snapshot(final=True)
    log(f"done: {step} diffusion steps, {images} images, mean loss {loss_sum.item() / max(1, step):.4f}; "
        f"saved {out} after {time.monotonic() - t0:.0f}s")
    return out


def preview(model_dir: str, png: str, device: str = "cuda", seed: int = 0) -> None:
    """Load a saved pipeline back from disk (as DiffusionEngine would) and render 16 canonical prompts into a 4x4
    grid PNG; the prompts are printed in grid order."""
    import numpy as np
    import torch
    from diffusers import AutoPipelineForText2Image
    from PIL import Image

    from pipelines.world.model import RECOMMENDED_GUIDANCE, RECOMMENDED_STEPS
    from pipelines.world.scenes import CANVAS, TAGS, sample_spec

    rng = random.Random(seed)
    prompts = [sample_spec(TAGS[i % len(TAGS)], rng).prompt for i in range(16)]
    pipe = AutoPipelineForText2Image.from_pretrained(model_dir, dtype=torch.float32).to(device)
    pipe.set_progress_bar_config(disable=True)
    gens = [torch.Generator(device=device).manual_seed(i) for i in range(16)]
    with torch.inference_mode():
        images = pipe(prompts, num_inference_steps=RECOMMENDED_STEPS, guidance_scale=RECOMMENDED_GUIDANCE,
                      width=CANVAS, height=CANVAS, generator=gens, output_type="np").images
    tiles = (np.clip(images, 0, 1) * 255).round().astype(np.uint8).reshape(4, 4, CANVAS, CANVAS, 3)
    grid = np.concatenate(np.concatenate(tiles, axis=2), axis=0)
    Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.NEAREST).save(png)
    for i, prompt in enumerate(prompts):
        log(f"preview [{i // 4},{i % 4}] {prompt}")
    log(f"wrote {png}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m pipelines.world.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", help="Output directory for the pipeline.")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda")
    p.add_argument("--minutes", type=float, default=5.0, help="Wall-clock budget in minutes.")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--save-every-min", type=float, default=3.0)
    p.add_argument("--init-from", default=None, help="Continue training a saved world pipeline (no VAE phase).")
    p.add_argument("--preview", nargs=2, metavar=("MODEL_DIR", "PNG"),
                   help="Instead of training: render a 4x4 grid of canonical prompts with a saved pipeline.")
    a = p.parse_args(argv)
    if a.preview:
        preview(a.preview[0], a.preview[1], a.device)
        return
    if not a.out:
        p.error("--out is required")
    train(TrainConfig(out=a.out, device=a.device, minutes=a.minutes, seed=a.seed, batch_size=a.batch_size,
                      threads=a.threads, save_every_min=a.save_every_min, init_from=a.init_from))


if __name__ == "__main__":
    main()
