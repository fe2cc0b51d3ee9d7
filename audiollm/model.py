"""The audio language model: one decoder-only transformer over text tokens and audio frames, in plain torch.

A sequence position is either a text token or an audio frame. A text position is embedded by the text
table; an audio position by the sum of its K codebook embeddings. The trunk (pre-norm blocks with RoPE and
`scaled_dot_product_attention`) is shared; a text head writes the next text/special token and K audio
heads write the next step's K codes. Switches cover our defaults (RMSNorm, SwiGLU, full RoPE, sequential
residual) and a GPT-NeoX / Pythia trunk (LayerNorm with bias, GELU, partial RoPE, parallel residual).

This file knows nothing of codecs, patterns or Lightning; the token layout comes from `audiollm.vocab`.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from audiollm.files import atomic_path, atomic_write
from audiollm.vocab import Vocab


@dataclass
class ModelConfig:
    """Sizes and switches of the transformer; the token layout is `vocab`."""

    vocab: Vocab = field(default_factory=lambda: Vocab(text_size=256, num_codebooks=4, codebook_size=1024))
    n_layer: int = 4  # transformer blocks
    n_head: int = 4  # query heads
    n_kv_head: int | None = None  # key/value heads for grouped-query attention (None: n_head)
    d_model: int = 256  # width of the residual stream
    d_ff: int | None = None  # MLP hidden width (None: 4 * d_model for GELU, ~8/3 * d_model for SwiGLU)
    norm: str = "rmsnorm"  # "rmsnorm" or "layernorm" (LayerNorm with bias, as in GPT-NeoX)
    norm_eps: float = 1e-5  # epsilon of every norm
    mlp: str = "swiglu"  # "swiglu", "gelu" (exact) or "gelu_tanh"
    bias: bool = False  # biases in the attention and MLP projections (GPT-NeoX: True)
    parallel_residual: bool = False  # x + attn(n1(x)) + mlp(n2(x)) as in GPT-NeoX, instead of sequential
    rotary_pct: float = 1.0  # fraction of each head's dims that RoPE rotates (Pythia: 0.25)
    rope_theta: float = 10000.0  # RoPE base
    tie_embeddings: bool = False  # share the text embedding and text head weights
    dropout: float = 0.0  # dropout on the attention and MLP outputs during training
    init_std: float = 0.02  # std of the normal init of weights

    def __post_init__(self) -> None:
        if isinstance(self.vocab, dict):
            self.vocab = Vocab.from_dict(self.vocab)
        checks = {
            "norm": self.norm in ("rmsnorm", "layernorm"),
            "mlp": self.mlp in ("swiglu", "gelu", "gelu_tanh"),
            "d_model": self.d_model % self.n_head == 0,
            "n_kv_head": self.n_head % self.kv_heads == 0,
            "rotary_pct": 0.0 < self.rotary_pct <= 1.0 and self.rotary_dims % 2 == 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"ModelConfig.{name}={getattr(self, name)!r} is invalid (see its comment)")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @property
    def kv_heads(self) -> int:
        return self.n_kv_head or self.n_head

    @property
    def rotary_dims(self) -> int:
        return int(self.head_dim * self.rotary_pct)

    @property
    def ff_dim(self) -> int:
        if self.d_ff is not None:
            return self.d_ff
        return 4 * self.d_model if self.mlp != "swiglu" else 64 * math.ceil(8 * self.d_model / 3 / 64)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields, the vocabulary as its own dict."""
        return {**asdict(self), "vocab": self.vocab.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"model config has unknown keys {sorted(unknown)}")
        return cls(**d)


# Named sizes (dims only; pass `vocab=` for the token layout). Parameter counts with a 4k text vocabulary.
PRESETS: dict[str, dict[str, Any]] = {
    "debug": dict(n_layer=2, n_head=2, d_model=32),  # milliseconds per forward, for tests
    "tiny": dict(n_layer=4, n_head=4, d_model=256),  # ~5 M
    "small": dict(n_layer=6, n_head=8, d_model=512),  # ~25 M
    "base": dict(n_layer=12, n_head=12, d_model=768),  # ~100 M
}
# The switches that make the trunk a GPT-NeoX (Pythia) trunk: combine with a preset.
GPT_NEOX = dict(norm="layernorm", mlp="gelu", bias=True, parallel_residual=True, rotary_pct=0.25)


class KVCache:
    """Static, preallocated keys and values: per layer, two (B, n_kv_head, max_len, head_dim) tensors."""

    def __init__(
        self, config: ModelConfig, batch: int, max_len: int, dtype: torch.dtype, device: torch.device
    ):
        shape = (batch, config.kv_heads, max_len, config.head_dim)
        self.layers = [
            (torch.zeros(shape, dtype=dtype, device=device), torch.zeros(shape, dtype=dtype, device=device))
            for _ in range(config.n_layer)
        ]

    def update(self, layer: int, start: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Write k, v (B, n_kv_head, S, head_dim) at slots [start, start + S); return the layer's whole cache.

        The copy also casts: autocast may hand lower-precision k, v.
        """
        keys, values = self.layers[layer]
        keys[:, :, start : start + k.shape[2]] = k
        values[:, :, start : start + v.shape[2]] = v
        return keys, values


def attention_mask(valid: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """Bool (B, 1, S, L): the query at slot slots[i] sees earlier-or-equal slots that hold real tokens.

    valid: (B, L) bool, False at padding. A query always sees itself, so padded rows never go all-masked.
    """
    key = torch.arange(valid.shape[1], device=valid.device)
    causal = key[None, :] <= slots[:, None]  # (S, L)
    itself = key[None, :] == slots[:, None]  # (S, L)
    return ((causal[None] & valid[:, None, :]) | itself[None])[:, None]  # (B, 1, S, L)


def additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A bool attention mask (True: may attend) as the additive one SDPA adds to its scores: 0 or -inf."""
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, float("-inf"))


class Rotary(NamedTuple):
    """RoPE factors of a chunk's positions in the form `apply_rope` takes; computed once, used by every layer."""

    cos: torch.Tensor  # (B or 1, 1, S, head_dim), 1 beyond the rotary dims
    sin: torch.Tensor  # (B or 1, 1, S, rotary_dims), the first half negated

    def at(self, lo: int, hi: int) -> Rotary:
        """The factors of positions [lo, hi) along S."""
        return Rotary(self.cos[:, :, lo:hi], self.sin[:, :, lo:hi])


def rope(pos: torch.Tensor, config: ModelConfig, dtype: torch.dtype) -> Rotary:
    """RoPE factors for integer positions pos (B or 1, S) (GPT-NeoX layout: rotate the first rotary_dims of
    each head in two halves)."""
    half, rest = config.rotary_dims // 2, config.head_dim - config.rotary_dims
    inv_freq = config.rope_theta ** (-torch.arange(half, device=pos.device, dtype=torch.float32) / half)
    angles = pos[:, None, :, None].float() * inv_freq  # (B, 1, S, half)
    cos, sin = angles.cos(), angles.sin()
    cos = torch.cat([cos, cos, cos.new_ones(*cos.shape[:-1], rest)], -1)
    return Rotary(cos.to(dtype), torch.cat([-sin, sin], -1).to(dtype))


def apply_rope(x: torch.Tensor, rotary: Rotary) -> torch.Tensor:
    """x (B, h, S, head_dim) rotated: the first half of the rotary dims becomes x1 cos - x2 sin, the second
    x2 cos + x1 sin, the rest stays. With `rope`'s factors that is x * cos, plus (x2, x1) * sin on the rotary
    dims: three kernels, and a backward as cheap (a gather of the swapped halves would scatter-add back)."""
    cos, sin = rotary if rotary.cos.dtype == x.dtype else (t.to(x.dtype) for t in rotary)  # autocast
    r = sin.shape[-1]
    out = x * cos
    out[..., :r].addcmul_(x[..., :r].unflatten(-1, (2, r // 2)).flip(-2).flatten(-2), sin)  # (x2, x1) * sin
    return out


def make_norm(config: ModelConfig) -> nn.Module:
    if config.norm == "layernorm":
        return nn.LayerNorm(config.d_model, eps=config.norm_eps)
    return nn.RMSNorm(config.d_model, eps=config.norm_eps)


class Attention(nn.Module):
    """Multi-head (or grouped-query) causal self-attention with RoPE and an optional static KV cache."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        c, hd = config, config.head_dim
        self.qkv = nn.Linear(c.d_model, (c.n_head + 2 * c.kv_heads) * hd, bias=c.bias)  # [q | k | v]
        self.proj = nn.Linear(c.n_head * hd, c.d_model, bias=c.bias)

    def forward(
        self, x: torch.Tensor, rotary: Rotary, mask: torch.Tensor | None = None, cache: KVCache | None = None,
        layer: int = 0, start: int = 0,
    ) -> torch.Tensor:  # fmt: skip
        c, (B, S, _) = self.config, x.shape
        qkv = self.qkv(x).view(B, S, -1, c.head_dim).transpose(1, 2)  # (B, nh + 2 * nkv, S, hd)
        qk = apply_rope(qkv[:, : c.n_head + c.kv_heads], rotary)  # q and k heads rotated in one call
        q, k = qk.split([c.n_head, c.kv_heads], dim=1)  # (B, nh, S, hd), (B, nkv, S, hd)
        v = qkv[:, c.n_head + c.kv_heads :]  # (B, nkv, S, hd)
        if cache is not None:  # keys: the slots the mask covers, or without one those up to this chunk
            keys = start + S if mask is None else mask.shape[-1]
            k, v = (t[:, :, :keys] for t in cache.update(layer, start, k, v))  # (B, nkv, L, hd)
        else:
            v = v.contiguous()  # a view would keep all of qkv alive for backward
        q = q if q.dtype == k.dtype else q.to(k.dtype)  # autocast: the cache keeps the model's dtype
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            is_causal=mask is None and S > 1,
            enable_gqa=c.kv_heads != c.n_head,
        )  # (B, nh, S, hd)
        return self.proj(y.transpose(1, 2).reshape(B, S, c.n_head * c.head_dim))


class MLP(nn.Module):
    """SwiGLU or GELU feed-forward."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.kind = config.mlp
        width = 2 * config.ff_dim if config.mlp == "swiglu" else config.ff_dim  # SwiGLU: [gate | up]
        self.fc = nn.Linear(config.d_model, width, bias=config.bias)
        self.proj = nn.Linear(config.ff_dim, config.d_model, bias=config.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        if self.kind == "swiglu":
            gate, up = h.chunk(2, dim=-1)
            h = F.silu(gate) * up
        else:
            h = F.gelu(h, approximate="tanh" if self.kind == "gelu_tanh" else "none")
        return self.proj(h)


class Block(nn.Module):
    """Pre-norm transformer block; sequential or (GPT-NeoX) parallel residual."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.parallel = config.parallel_residual
        self.norm1, self.attn = make_norm(config), Attention(config)
        self.norm2, self.mlp = make_norm(config), MLP(config)
        self.drop = nn.Dropout(config.dropout) if config.dropout > 0 else None

    def forward(
        self, x: torch.Tensor, rotary: Rotary, mask: torch.Tensor | None = None, cache: KVCache | None = None,
        layer: int = 0, start: int = 0,
    ) -> torch.Tensor:  # fmt: skip
        a = self._drop(self.attn(self.norm1(x), rotary, mask, cache, layer, start))
        if self.parallel:
            return x + a + self._drop(self.mlp(self.norm2(x)))
        x = x + a
        return x + self._drop(self.mlp(self.norm2(x)))

    def _drop(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.drop is None else self.drop(x)  # no module call when there is no dropout


def input_major(module: nn.Module) -> None:
    """Store each nn.Linear weight (out, in) as the transpose of a contiguous (in, out) array.

    Values, shapes and state-dict keys stay as they are (saving writes the usual layout). F.linear then
    passes GEMM an untransposed operand, which MKL runs faster at the few rows of a decoding step and a
    little faster in training (BENCHMARKS.md, "LM"). `.to()` and `load_state_dict` keep the layout.
    """
    for m in module.modules():
        if isinstance(m, nn.Linear) and m.weight.is_contiguous():
            m.weight = nn.Parameter(m.weight.detach().t().contiguous().t(), m.weight.requires_grad)


def _audio_offsets(vocab: Vocab, device: torch.device | str | None = None) -> torch.Tensor:
    """(K,) first row of each codebook in the stacked audio table (the vocabulary's audio blocks, shifted to 0)."""
    rows = [vocab.audio_offset(k) - vocab.text_vocab_size for k in range(vocab.num_codebooks)]
    return torch.tensor(rows, dtype=torch.long, device=device)


class AudioLanguageModel(nn.Module):
    """Decoder LM over mixed text/audio sequences: embeddings, trunk, a text head and K audio heads."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        v, d = config.vocab, config.d_model
        self.text_embed = nn.Embedding(v.text_vocab_size, d)
        self.audio_embed = nn.Embedding(v.num_codebooks * v.audio_card, d)  # K stacked codebook tables
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.norm = make_norm(config)
        self.text_head = nn.Linear(d, v.text_vocab_size, bias=False)
        self.audio_heads = nn.Linear(d, v.num_codebooks * v.audio_card, bias=False)  # K heads in one matmul
        self.register_buffer("audio_offsets", _audio_offsets(v), persistent=False)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: scale the residual projections by depth
            if name.endswith("proj.weight"):
                nn.init.normal_(p, std=config.init_std / math.sqrt(2 * config.n_layer))
        input_major(self)
        if config.tie_embeddings:
            self.text_head.weight = self.text_embed.weight

    @torch.no_grad()
    def init_audio_embed(self, vectors: torch.Tensor, seed: int = 0) -> None:
        """Start each codebook's embedding from the codec: code c of codebook k embeds as vectors[k, c] @ P.

        vectors: (K', C, D) float, K' >= K, C = codebook_size: what each code stands for in the codec's
        latent (`Codec.codebook_vectors`). P (D, d_model) is a fixed random orthonormal projection, so a
        frame's summed embedding starts as the projection of its quantised latent and similar sounds start
        near each other; the scale puts codebook 0 at `init_std`. Empty codes keep their random rows.
        """
        v, d = self.config.vocab, self.config.d_model
        K, C, D = v.num_codebooks, v.codebook_size, vectors.shape[-1]
        if vectors.dim() != 3 or vectors.shape[0] < K or vectors.shape[1] != C:
            raise ValueError(
                f"need codebook vectors (>= {K}, {C}, D) for this vocabulary, got {tuple(vectors.shape)}"
            )
        g = torch.Generator().manual_seed(seed)
        q, _ = torch.linalg.qr(torch.randn(max(d, D), min(d, D), generator=g))  # orthonormal columns
        proj = q.T if D <= d else q  # (D, d): an isometry into the model's space, or a projection onto d
        table = vectors[:K].float() @ proj  # (K, C, d)
        table *= self.config.init_std / table[0].std()
        weight = self.audio_embed.weight.view(K, v.audio_card, d)
        weight[:, :C] = table.to(weight)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, std=self.config.init_std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def embed(
        self, text: torch.Tensor, audio: torch.Tensor | None = None, is_audio: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Input vectors (B, S, d_model).

        text: (B, S) int64 text/special ids (ignored where is_audio); audio: (B, S, K) int64 local codes in
        [0, audio_card) (ignored where not is_audio); is_audio: (B, S) bool. Without audio: text only.
        """
        x = self.text_embed(text)  # (B, S, d)
        if audio is None:
            return x
        B, S, K = audio.shape
        rows = (audio + self.audio_offsets).reshape(B * S, K)  # (B*S, K) rows of the stacked table
        frames = F.embedding_bag(rows, self.audio_embed.weight, mode="sum").view(B, S, -1)  # (B, S, d)
        return torch.where(is_audio[..., None], frames, x)

    def trunk(
        self, x: torch.Tensor, rotary: Rotary | None = None, mask: torch.Tensor | None = None,
        cache: KVCache | None = None, start: int = 0,
    ) -> torch.Tensor:  # fmt: skip
        """Hidden states (B, S, d_model) after the blocks and the final norm.

        rotary: `rope(pos, ...)` for this chunk's positions (default: positions 0..S-1); mask: (B, 1, S, L)
        bool or additive float (default: causal, no padding). With a cache the chunk is written to slots
        [start, start + S) and its queries see slots [0, L), or without a mask [0, start + S): a mask is then
        needed only for padding or for a chunk of several positions after slot 0.
        """
        if mask is None and cache is not None and start > 0 and x.shape[1] > 1:
            raise ValueError("a chunk of several positions after cache slot 0 needs a mask (attention_mask)")
        if rotary is None:
            rotary = rope(torch.arange(x.shape[1], device=x.device)[None], self.config, x.dtype)
        if mask is not None and mask.dtype == torch.bool:
            mask = additive(mask, x.dtype)  # once here rather than in every layer's attention
        for i, block in enumerate(self.blocks):
            x = block(x, rotary, mask, cache, i, start)
        return self.norm(x)

    def heads(self, h: torch.Tensor, audio: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """h (B, S, d) -> text logits (B, S, text_vocab_size), audio logits (B, S, K, audio_card) or None."""
        v = self.config.vocab
        if not audio:
            return self.text_head(h), None
        return self.text_head(h), self.audio_heads(h).unflatten(-1, (v.num_codebooks, v.audio_card))

    def forward(
        self, text: torch.Tensor, audio: torch.Tensor | None = None, is_audio: torch.Tensor | None = None,
        **trunk_args: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """Logits predicting the next position: text (B, S, text_vocab_size), audio (B, S, K, audio_card)."""
        return self.heads(self.trunk(self.embed(text, audio, is_audio), **trunk_args))

    def text_logits(self, ids: torch.Tensor) -> torch.Tensor:
        """Text-only input: ids (B, L) int64 -> next-token logits (B, L, text_vocab_size)."""
        return self.text_head(self.trunk(self.embed(ids)))

    def weights(self) -> dict[str, torch.Tensor]:
        """The state dict as saved: without a tied text head (it is `text_embed`)."""
        state = self.state_dict()
        if self.config.tie_embeddings:
            del state["text_head.weight"]  # the same tensor as text_embed.weight
        return state

    def save_pretrained(self, path: str | Path, codec: dict[str, Any] | None = None) -> None:
        """Write `config.json` (model config, vocabulary, optional codec reference) and `model.safetensors`:
        the model part of a checkpoint (`audiollm.checkpoint` writes the whole one)."""
        save_directory(path, self.weights(), {"model": self.config.to_dict(), "codec": codec})

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu") -> AudioLanguageModel:
        """Load a directory written by `save_pretrained` (safetensors only; nothing is unpickled)."""
        config = ModelConfig.from_dict(read_config(path)["model"])
        return cls.from_weights(config, Path(path) / WEIGHTS_FILE, device)

    @classmethod
    def from_weights(
        cls, config: ModelConfig, file: str | Path, device: str | torch.device = "cpu"
    ) -> AudioLanguageModel:
        """The model of `config` with the weights of a safetensors `file` (as written from `weights()`;
        float16 files are widened to float32), in eval mode on `device`."""
        from safetensors.torch import load_file

        with torch.device("meta"):
            model = cls(config)
        state = load_file(str(file), device=str(device))
        state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}  # shipped as fp16
        missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
        missing = [k for k in missing if not (config.tie_embeddings and k == "text_head.weight")]
        if missing or unexpected:
            raise ValueError(f"{file}: missing {missing}, unexpected {unexpected}")
        input_major(model)
        if config.tie_embeddings:
            model.text_head.weight = model.text_embed.weight
        model.audio_offsets = _audio_offsets(config.vocab, device)
        return model.eval()


WEIGHTS_FILE, CONFIG_FILE = "model.safetensors", "config.json"  # the files of a model or codec directory


def save_directory(directory: str | Path, state: dict[str, torch.Tensor], config: dict[str, Any]) -> Path:
    """Write `state` as `model.safetensors`, then `config` as `config.json` (indented JSON), each renamed
    into place (`audiollm.files`), so a directory with a config.json holds whole files; returns it."""
    from safetensors.torch import save_file

    directory = Path(directory)
    with atomic_path(directory / WEIGHTS_FILE) as tmp:
        save_file({k: t.detach().cpu().contiguous() for k, t in state.items()}, str(tmp))
    with atomic_write(directory / CONFIG_FILE, "w") as f:
        f.write(json.dumps(config, indent=2) + "\n")
    return directory


def read_config(path: str | Path) -> dict[str, Any]:
    """The parsed `config.json` of a checkpoint directory (keys: model, codec)."""
    file = Path(path) / CONFIG_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{file} not found: expected a directory written by save_pretrained")
    config = json.loads(file.read_text())
    if "model" not in config:
        raise ValueError(
            f"{file} has no 'model' entry: it was not written by AudioLanguageModel.save_pretrained"
        )
    return config


def lm_loss(
    text_logits: torch.Tensor,
    audio_logits: torch.Tensor,
    text_targets: torch.Tensor,
    audio_targets: torch.Tensor,
    text_mask: torch.Tensor,
    audio_mask: torch.Tensor,
    text_weight: torch.Tensor | None = None,
    balance: str = "token",
) -> dict[str, torch.Tensor]:
    """Cross-entropy over the positions the caller's masks select.

    text_logits (B, S, V), text_targets (B, S) int64, text_mask (B, S) bool; audio_logits (B, S, K, C),
    audio_targets (B, S, K) int64, audio_mask (B, S, K) bool; text_weight (B, S) float weighs each text
    position's term (None: all 1). Returns `loss`, `text_loss` and `audio_loss` (means per modality; 0 where
    none selected). `balance="token"`: `loss` is the weighted mean over every selected text token and audio
    code; `"example"`: the mean over rows of each row's own weighted mean, so an ASR row (a transcript of a
    few tokens) weighs as much as a TTS row (hundreds of frames of K codes) and the task mixture sets each
    task's share of the gradient.
    """
    if balance not in ("token", "example"):
        raise ValueError(f"balance must be 'token' or 'example', got {balance!r}")
    text_ce = F.cross_entropy(text_logits[text_mask].float(), text_targets[text_mask], reduction="none")
    weight = text_weight[text_mask].float() if text_weight is not None else torch.ones_like(text_ce)
    audio_ce = F.cross_entropy(audio_logits[audio_mask].float(), audio_targets[audio_mask], reduction="none")
    text_sum, n_text = (text_ce * weight).sum(), weight.sum()
    audio_sum, n_audio = audio_ce.sum(), audio_mask.sum()
    out = {"text_loss": text_sum / n_text.clamp(min=1), "audio_loss": audio_sum / n_audio.clamp(min=1)}
    if balance == "token":
        return {"loss": (text_sum + audio_sum) / (n_text + n_audio).clamp(min=1), **out}
    B = text_mask.shape[0]
    text_rows, audio_rows = text_mask.nonzero()[:, 0], audio_mask.nonzero()[:, 0]
    sums = text_ce.new_zeros(B).index_add_(0, text_rows, text_ce * weight).index_add_(0, audio_rows, audio_ce)
    counts = weight.new_zeros(B).index_add_(0, text_rows, weight)
    counts = counts.index_add_(0, audio_rows, torch.ones_like(audio_ce))  # (B,)
    rows = counts > 0
    per_row = sums[rows] / counts[rows]
    return {"loss": per_row.mean() if rows.any() else sums.sum(), **out}
