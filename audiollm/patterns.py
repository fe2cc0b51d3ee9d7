"""Codebook patterns: how the K codes of each audio frame are laid out over sequence steps.

Codes of one clip are a grid `codes (B, K, T)`; the LM reads `steps (B, K, S)`: at each step one position
whose input is the sum of its K codebook embeddings. A pattern maps frames to steps (`build`) and back
(`revert`); positions with no code hold `fill` (the vocabulary's empty code). Both work for codes and for
logits (any trailing dims: `(B, K, T, card)`), and are exact inverses: `revert(build(x)) == x`.

Every pattern is a gather: `step_index` says which frame each step position reads, `frame_index` which
step position holds each frame. Three implementations, chosen by name from `PATTERNS`.
"""

from __future__ import annotations

from typing import Protocol

import torch


class Pattern(Protocol):
    def num_steps(self, T: int, K: int) -> int:
        """Steps needed for T frames."""

    def num_frames(self, S: int, K: int) -> int:
        """Complete frames held by S steps (a cut-off stream keeps only its complete frames)."""

    def step_index(self, T: int, K: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(idx, valid), both (K, S): step s of codebook k reads frame idx[k, s] where valid[k, s]."""

    def frame_index(self, T: int, K: int) -> torch.Tensor:
        """(K, T) int64: frame t of codebook k sits at step idx[k, t]."""


class DelayPattern:
    """MusicGen's delay: codebook k is shifted right by k steps; S = T + K - 1. Grid for K=3, T=4
    (cell = frame index, `.` = empty)::

        step  0 1 2 3 4 5
        k=0   0 1 2 3 . .
        k=1   . 0 1 2 3 .
        k=2   . . 0 1 2 3
    """

    def num_steps(self, T: int, K: int) -> int:
        return T + K - 1 if T > 0 else 0

    def num_frames(self, S: int, K: int) -> int:
        return max(S - K + 1, 0)

    def step_index(self, T: int, K: int) -> tuple[torch.Tensor, torch.Tensor]:
        S = self.num_steps(T, K)
        idx = torch.arange(S)[None, :] - torch.arange(K)[:, None]  # (K, S)
        return idx.clamp(0, max(T - 1, 0)), (idx >= 0) & (idx < T)

    def frame_index(self, T: int, K: int) -> torch.Tensor:
        return torch.arange(T)[None, :] + torch.arange(K)[:, None]  # (K, T)


class FlattenPattern:
    """AudioPaLM / UniAudio flattening: one code per step, frame by frame; S = K * T. Grid for K=3, T=2::

    step  0 1 2 3 4 5
    k=0   0 . . 1 . .
    k=1   . 0 . . 1 .
    k=2   . . 0 . . 1
    """

    def num_steps(self, T: int, K: int) -> int:
        return K * T

    def num_frames(self, S: int, K: int) -> int:
        return S // K

    def step_index(self, T: int, K: int) -> tuple[torch.Tensor, torch.Tensor]:
        s = torch.arange(K * T)[None, :].expand(K, -1)  # (K, S)
        return s // K, s % K == torch.arange(K)[:, None]

    def frame_index(self, T: int, K: int) -> torch.Tensor:
        return torch.arange(T)[None, :] * K + torch.arange(K)[:, None]  # (K, T)


class ParallelPattern:
    """All K codes of a frame at the same step; S = T. Grid for K=3, T=4::

    step  0 1 2 3
    k=0   0 1 2 3
    k=1   0 1 2 3
    k=2   0 1 2 3
    """

    def num_steps(self, T: int, K: int) -> int:
        return T

    def num_frames(self, S: int, K: int) -> int:
        return S

    def step_index(self, T: int, K: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.arange(T)[None, :].expand(K, -1)  # (K, S)
        return idx, torch.ones(K, T, dtype=torch.bool)

    def frame_index(self, T: int, K: int) -> torch.Tensor:
        return torch.arange(T)[None, :].expand(K, -1)  # (K, T)


PATTERNS: dict[str, Pattern] = {
    "delay": DelayPattern(),
    "flatten": FlattenPattern(),
    "parallel": ParallelPattern(),
}


def get(name: str) -> Pattern:
    """The pattern called `name` (delay, flatten, parallel)."""
    if name not in PATTERNS:
        raise ValueError(f"unknown codebook pattern {name!r}; choose one of {sorted(PATTERNS)}")
    return PATTERNS[name]


def _gather_time(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x (B, K, N, *rest), idx (K, M) -> (B, K, M, *rest) with out[:, k, m] = x[:, k, idx[k, m]]."""
    B, K, _, *rest = x.shape
    M = idx.shape[1]  # explicit: a -1 cannot be inferred when M == 0 (no steps, no frames)
    idx = idx.to(x.device).view(1, K, M, *[1] * len(rest)).expand(B, K, M, *rest)  # (B, K, M, *rest)
    return x.gather(2, idx)


def build(codes: torch.Tensor, pattern: str, fill: float | int) -> torch.Tensor:
    """Frames -> steps. codes: (B, K, T, *rest) -> (B, K, S, *rest); positions without a code hold `fill`."""
    B, K, T = codes.shape[:3]
    idx, valid = get(pattern).step_index(T, K)  # (K, S), (K, S)
    if T == 0:
        return codes.new_full((B, K, idx.shape[1], *codes.shape[3:]), fill)
    steps = _gather_time(codes, idx)
    valid = valid.to(codes.device).view(1, K, -1, *[1] * (codes.dim() - 3))  # (1, K, S, 1...)
    return torch.where(valid, steps, torch.as_tensor(fill, dtype=codes.dtype, device=codes.device))


def revert(steps: torch.Tensor, pattern: str) -> torch.Tensor:
    """Steps -> frames. steps: (B, K, S, *rest) -> (B, K, T, *rest), T = the complete frames in S steps."""
    p = get(pattern)
    K, S = steps.shape[1], steps.shape[2]
    return _gather_time(steps, p.frame_index(p.num_frames(S, K), K))


def next_frame_step(T: int, K: int, pattern: str) -> int:
    """The step at which codebook 0 would write frame T after T frames: where a stream decides to end."""
    return int(get(pattern).frame_index(T + 1, K)[0, T])


def tail(K: int, pattern: str) -> torch.Tensor:
    """(n, K) bool: which codebooks still carry a code on each of the n steps after a stream's end decision
    (delay: codebook k on the first k of its K-1 steps; flatten and parallel end at once, n = 0)."""
    _, valid = get(pattern).step_index(K, K)  # (K, S) for a stream of K frames; the tail does not depend on T
    return valid[:, next_frame_step(K, K, pattern) :].T.contiguous()


def codebooks_at(step: int, K: int, pattern: str) -> torch.Tensor:
    """(K,) bool: which codebooks carry a real code at `step` of an open-ended stream (for generation)."""
    _, valid = get(pattern).step_index(step + 1, K)  # a stream of step+1 frames reaches at least `step`
    return valid[:, step]
