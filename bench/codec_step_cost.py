"""Cost of one codec training step and of decoding, per decoder and discriminator, in one process.

A step is the recipe's: reconstruction losses, a discriminator update, adversarial + feature-matching
terms, backward and an optimiser step, on a batch of 8 x 0.5 s of noise at 16 kHz (the cost does not
depend on the content). Decode: 10 s of latents. Prints a markdown table; ratios are against the first row.

    python -m bench.codec_step_cost [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import torch

from audiollm.codecs import losses
from audiollm.codecs.native import NativeCodecConfig
from audiollm.train.codec import CodecModule

ENCODER = dict(n_filters=16, lstm_layers=1, dimension=64, num_codebooks=12, codebook_size=1024)
CANDIDATES = [  # (decoder, discriminator, discriminator channels)
    ("seanet", "none", 0),
    ("istft", "none", 0),
    ("istft", "mrd", 8),
    ("istft", "mrd", 16),
    ("istft", "msstft", 8),
    ("seanet", "mrd", 16),
]


def step_seconds(module: CodecModule, batch: torch.Tensor, repeats: int = 3) -> float:
    """Best wall time of one generator (+ discriminator) update on `batch` (B, 1, N)."""
    codec, disc = module.codec, module.discriminator
    opt = torch.optim.AdamW(module.parameters(), 1e-4)
    best = float("inf")
    for _ in range(repeats + 1):  # the first is a warm-up
        started = time.perf_counter()
        recon = codec.decoder(codec.latent(batch))
        loss = module.mel_loss(recon, batch) + module.stft_loss(recon, batch)
        if disc is not None:
            real_logits, real_fmaps = disc(batch)
            fake_logits, _ = disc(recon.detach())
            losses.discriminator_hinge_loss(real_logits, fake_logits).backward()
            fake_logits, fake_fmaps = disc(recon)
            adversarial = losses.generator_adversarial_loss(fake_logits)
            loss = loss + adversarial + losses.feature_matching_loss(real_fmaps, fake_fmaps)
        loss.backward()
        opt.step()
        opt.zero_grad()
        best = min(best, time.perf_counter() - started)
    return best


@torch.no_grad()
def decode_seconds(module: CodecModule, seconds: float = 10.0) -> float:
    codec = module.codec.eval()
    z = torch.randn(1, codec.config.dimension, round(seconds * codec.frame_rate))  # (1, D, T)
    started = time.perf_counter()
    codec.decoder(z)
    return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    batch = 0.1 * torch.randn(8, 1, 8000, generator=torch.Generator().manual_seed(0))
    print(
        f"| decoder | discriminator | step (s) | x first row | decoder params | decode 10 s (s) |  ({args.threads} threads)"
    )
    print("|---|---|---:|---:|---:|---:|")
    first = None
    for decoder, disc, channels in CANDIDATES:
        torch.manual_seed(0)
        config = NativeCodecConfig(**ENCODER, decoder=decoder)
        module = CodecModule(config, discriminator=disc, discriminator_filters=channels or 8)
        step = step_seconds(module, batch)
        first = first or step
        params = sum(p.numel() for p in module.codec.decoder.parameters()) / 1e6
        label = disc if disc == "none" else f"{disc} ({channels} ch)"
        print(
            f"| {decoder} | {label} | {step:.3f} | {step / first:.2f} | {params:.2f} M | {decode_seconds(module):.3f} |"
        )


if __name__ == "__main__":
    main()
