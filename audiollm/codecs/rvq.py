"""k-means initialisation of the `encodec` package's EMA codebooks, fast enough for 1024 codes on a CPU.

encodec's own k-means materialises an (N, K, D) difference tensor; this one uses a matmul (N, K).
"""

from __future__ import annotations

import torch
from encodec import distrib
from encodec.quantization.core_vq import EuclideanCodebook


def kmeans(
    samples: torch.Tensor, k: int, iters: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means. samples float (N, D) -> (means (k, D), cluster sizes (k,) float).

    Starts from k samples drawn without replacement (with replacement when N < k); empty clusters keep
    their previous mean.
    """
    N = samples.shape[0]
    pick = (
        torch.randperm(N, generator=generator)[:k] if N >= k else torch.randint(N, (k,), generator=generator)
    )
    means = samples[pick].clone()  # (k, D)
    counts = torch.zeros(k)
    for _ in range(iters):
        dists = (means * means).sum(1) - 2 * samples @ means.T  # (N, k); |x|^2 is the same for every mean
        assign = dists.argmin(dim=1)  # (N,)
        counts = torch.bincount(assign, minlength=k).to(samples.dtype)
        sums = torch.zeros_like(means).index_add_(0, assign, samples)  # (k, D)
        means = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], means)
    return means, counts


@torch.no_grad()
def init_codebook_(codebook: EuclideanCodebook, samples: torch.Tensor, iters: int) -> None:
    """Set an uninitialised codebook to the k-means centroids of samples (N, D) and mark it initialised.

    Under torch.distributed every rank then takes rank 0's codebook.
    """
    if bool(codebook.inited):
        return
    means, counts = kmeans(samples, codebook.codebook_size, iters)
    codebook.embed.copy_(means)
    codebook.embed_avg.copy_(means)
    codebook.cluster_size.copy_(counts)
    codebook.inited.fill_(1)
    distrib.broadcast_tensors(codebook.buffers())
