"""Int8 quantisation of the LM's Linear layers: int8 weight codes with one float scale per output channel.

What a quantised Linear computes depends on where its weight lives (each layer is checked on its own):

- CPU (x86, torch built with FBGEMM): `Int8Linear`. NOT weight-only: activations are quantised too.
  Per token (one row of the input), x is divided by its max |x| and rounded to 7-bit codes in [-63, 63];
  FBGEMM multiplies these by the weight's int8 codes (scale max |row| / 127 per output channel), summing
  exactly in int32, and the sum is scaled back by the token's and the channel's scales. The bias stays in
  float.
  Why not weight-only: on CPU no weight-only int8 kernel is fast. torchao's `Int8WeightOnlyConfig` turns
  the weight back into floats on every call (0.7-1.0x float32 tokens/s for `tiny` and `small`), torch's
  `aten._weight_int8pack_mm` is 5-20x slower than a float32 Linear, and torchao's
  `Int8DynamicActivationInt8WeightConfig` and `torch._int_mm` have no fast CPU kernel in eager mode
  (0.06-0.4x). FBGEMM's int8 GEMM: 1.6-2.6x for the 26 M `small` preset, 1.0-1.4x for the 6.6 M `tiny`
  (at batch 1 about 1.0x: its small trunk matmuls lose what its large heads gain), with
  bench.fast_generation's runs on the 2-core CPU.
  Why per token: a token's codes then do not depend on the other tokens in the batch or how many are fed
  at once, so prefill, KV-cache steps and batching agree (to float rounding; the per-tensor scale of
  torch's `quantize_dynamic` couples them). Why 7 bits: without VNNI (this CPU has AVX2) the u8 x s8
  kernel adds products in pairs into int16, which 8-bit codes can saturate (torch's own dynamic
  quantisation passes `reduce_range=True` on x86 for the same reason).
- CUDA, and CPUs without FBGEMM: torchao's `Int8WeightOnlyConfig`, weight-only (activations stay in the
  model's dtype; the gpt-fast int8 path, best under `torch.compile`).

Embeddings (gathers, not matmuls) stay as they are. Quantise after moving the model to its device.
"""

from __future__ import annotations

import torch
from torch import nn

SCHEMES = ("int8",)  # accepted values of `quantize`
ACT_LEVELS = 63  # activation codes in [-63, 63], stored as uint8 64 + code: 7 bits, no int16 saturation
TINY, INF = 1e-12, float("inf")  # TINY: the smallest scale (an all-zero row or token gives zeros)
_FBGEMM = "fbgemm" in torch.backends.quantized.supported_engines  # x86 builds of torch
_int8_mm = None if not _FBGEMM else torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32.default


def check_scheme(scheme: str) -> str:
    """`scheme` if it is one of `SCHEMES`, else a ValueError naming the accepted values."""
    if scheme not in SCHEMES:
        raise ValueError(
            f"quantize={scheme!r} is not supported; accepted values: {', '.join(SCHEMES)} (or None)"
        )
    return scheme


def weight_codes(weight: torch.Tensor) -> torch.Tensor:
    """Symmetric per-output-channel int8 codes of a (out, in) weight: a quantised tensor, codes in
    [-127, 127], scale max |row| / 127 per row."""
    w = weight.detach().float()
    scale = w.abs().amax(1).clamp(min=TINY) / 127  # (out,)
    zero = torch.zeros(len(scale), dtype=torch.long)
    return torch.quantize_per_channel(w, scale.double(), zero, 0, torch.qint8)


class Int8Linear(nn.Module):
    """The CPU int8 Linear: y = x W^T + b with W as FBGEMM-packed int8 codes and per-channel scales, and
    each token of x quantised to int8 on the fly (per-token dynamic activations, see the module docstring).

    x: (..., in) of any float dtype -> (..., out) of the same dtype.
    """

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        engine = torch.backends.quantized.engine
        torch.backends.quantized.engine = "fbgemm"  # the packed type that has the fused kernel below
        try:
            self.packed = torch.ops.quantized.linear_prepack(weight_codes(linear.weight), None)
        finally:
            torch.backends.quantized.engine = engine
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 1:  # the kernel takes (..., in) with at least one leading dim
            return self(x[None])[0]
        xf = x if x.dtype == torch.float32 else x.float()  # few calls: at batch 1 each one shows
        if xf.numel() == self.in_features:  # one token (a decode step at batch 1): its scale as a number
            amax = max(float(torch.linalg.vector_norm(xf, INF)), TINY)
            y = _int8_mm(xf, amax / ACT_LEVELS, ACT_LEVELS + 1, self.packed)  # (..., out)
        else:  # each token divided by its own max |x|, so that one kernel scale fits all
            amax = torch.linalg.vector_norm(xf, INF, -1, keepdim=True).clamp_(min=TINY)  # (..., 1)
            y = _int8_mm(xf / amax, 1 / ACT_LEVELS, ACT_LEVELS + 1, self.packed).mul_(amax)  # (..., out)
        y = y if y.dtype == x.dtype else y.to(x.dtype)
        return y if self.bias is None else y + self.bias

    def nbytes(self) -> int:
        """Bytes of the weight: int8 codes (out, in) and float32 scales (out,) (FBGEMM's int32 per-channel
        bookkeeping, 8 bytes a channel, not counted)."""
        return self.out_features * self.in_features + 4 * self.out_features

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
        )


@torch.no_grad()
def quantize(model: nn.Module, scheme: str = "int8") -> nn.Module:
    """Quantise every nn.Linear of `model` in place (int8 codes, per-output-channel scales) and return it;
    a `model` that is itself a CPU nn.Linear is returned as its `Int8Linear`.

    For inference only: the quantised weights carry no gradient.
    """
    check_scheme(scheme)
    model.requires_grad_(False)
    if _on_cpu(model):
        return Int8Linear(model)
    _swap_cpu_linears(model)
    if any(isinstance(m, nn.Linear) for m in model.modules()):  # CUDA, or a CPU without FBGEMM
        from torchao.quantization import Int8WeightOnlyConfig, quantize_  # heavy import, only when asked

        quantize_(model, Int8WeightOnlyConfig(), filter_fn=lambda m, _: isinstance(m, nn.Linear))
    return model


def _on_cpu(m: nn.Module) -> bool:
    """Whether `m` is an nn.Linear that gets the CPU path."""
    return isinstance(m, nn.Linear) and m.weight.device.type == "cpu" and _FBGEMM


def _swap_cpu_linears(module: nn.Module) -> None:
    """Replace each CPU nn.Linear below `module` by its Int8Linear."""
    for name, child in module.named_children():
        if _on_cpu(child):
            setattr(module, name, Int8Linear(child))
        else:
            _swap_cpu_linears(child)


def weight_bytes(module: nn.Module, linear_only: bool = False) -> int:
    """Bytes of `module`'s parameters (a quantised weight counts its codes and scales); with `linear_only`,
    only the weights of its Linear layers (nn.Linear and Int8Linear)."""
    modules = list(module.modules())  # each module once, shared ones too
    params = [m.weight for m in modules if isinstance(m, nn.Linear)] if linear_only else module.parameters()
    seen, total = set(), 0
    for p in params:
        if id(p) in seen:  # tied weights count once
            continue
        seen.add(id(p))
        total += _nbytes(p)
    return total + sum(m.nbytes() for m in modules if isinstance(m, Int8Linear))  # packed, not parameters


def _nbytes(t: torch.Tensor) -> int:
    """Storage of a tensor, or of the inner tensors of a tensor subclass (torchao's Int8Tensor)."""
    if hasattr(t, "__tensor_flatten__"):
        names, _ = t.__tensor_flatten__()
        return sum(_nbytes(getattr(t, n)) for n in names)
    return t.numel() * t.element_size()
