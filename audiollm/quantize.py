"""Int8 weight-only quantisation of the LM's Linear layers, with one scale per output channel.

torchao's `Int8WeightOnlyConfig` does the work (one library for CPU and CUDA; on CUDA its kernels are the
gpt-fast int8 path, best under `torch.compile`). Each nn.Linear weight (out, in) becomes int8 codes and a
float scale per output row; activations stay in the model's dtype. Embeddings (gathers, not matmuls) stay
as they are. The input-major layout of `audiollm.model.input_major` is kept: torchao quantises the strided
weight in place of the dense one.
"""

from __future__ import annotations

import torch
from torch import nn

SCHEMES = ("int8",)  # accepted values of `quantize`


def check_scheme(scheme: str) -> str:
    """`scheme` if it is one of `SCHEMES`, else a ValueError naming the accepted values."""
    if scheme not in SCHEMES:
        raise ValueError(
            f"quantize={scheme!r} is not supported; accepted values: {', '.join(SCHEMES)} (or None)"
        )
    return scheme


@torch.no_grad()
def quantize(model: nn.Module, scheme: str = "int8") -> nn.Module:
    """Quantise every nn.Linear weight of `model` in place (int8 codes, per-output-channel scales); returns it.

    For inference only: the quantised weights carry no gradient.
    """
    check_scheme(scheme)
    from torchao.quantization import Int8WeightOnlyConfig, quantize_  # heavy import, only when asked

    model.requires_grad_(False)
    quantize_(model, Int8WeightOnlyConfig(), filter_fn=lambda m, _: isinstance(m, nn.Linear))
    return model


def weight_bytes(module: nn.Module, linear_only: bool = False) -> int:
    """Bytes of `module`'s parameters (a quantised weight counts its codes and scales); with `linear_only`,
    only the nn.Linear weights."""
    params = (
        [m.weight for m in module.modules() if isinstance(m, nn.Linear)]
        if linear_only
        else module.parameters()
    )
    seen, total = set(), 0
    for p in params:
        if id(p) in seen:  # tied weights count once
            continue
        seen.add(id(p))
        total += _nbytes(p)
    return total


def _nbytes(t: torch.Tensor) -> int:
    """Storage of a tensor, or of the inner tensors of a tensor subclass (torchao's Int8Tensor)."""
    if hasattr(t, "__tensor_flatten__"):
        names, _ = t.__tensor_flatten__()
        return sum(_nbytes(getattr(t, n)) for n in names)
    return t.numel() * t.element_size()
