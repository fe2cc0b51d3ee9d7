"""Start the trunk from a pretrained text LM: import a Hugging Face GPT-NeoX (Pythia) checkpoint directory.

The text rows of the embedding and head are kept (text ids are the checkpoint's ids); rows for our special
tokens start at the mean text embedding plus small noise; audio tables and heads keep the model's init.
Weights are read from safetensors, or from `pytorch_model.bin` with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from audiollm.checkpoint import Checkpoint
from audiollm.model import GPT_NEOX, AudioLanguageModel, ModelConfig
from audiollm.text import HFTokenizer
from audiollm.vocab import DEFAULT_TASKS, Vocab

_ACTIVATIONS = {
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_fast": "gelu_tanh",
}
_IGNORED = ("attention.bias", "attention.masked_bias", "rotary_emb.inv_freq")  # buffers older files saved
# Our parameter name <- the GPT-NeoX name, per layer ({i}) and for the whole model.
_LAYER_KEYS = {
    "norm1.weight": "input_layernorm.weight",
    "norm1.bias": "input_layernorm.bias",
    "norm2.weight": "post_attention_layernorm.weight",
    "norm2.bias": "post_attention_layernorm.bias",
    "attn.qkv.weight": "attention.query_key_value.weight",
    "attn.qkv.bias": "attention.query_key_value.bias",
    "attn.proj.weight": "attention.dense.weight",
    "attn.proj.bias": "attention.dense.bias",
    "mlp.fc.weight": "mlp.dense_h_to_4h.weight",
    "mlp.fc.bias": "mlp.dense_h_to_4h.bias",
    "mlp.proj.weight": "mlp.dense_4h_to_h.weight",
    "mlp.proj.bias": "mlp.dense_4h_to_h.bias",
}


def neox_model_config(hf: dict[str, Any], vocab: Vocab) -> ModelConfig:
    """Our ModelConfig for a GPT-NeoX `config.json` dict (old `rotary_pct` or new `rope_parameters` keys)."""
    rope = hf.get("rope_parameters") or {}
    if hf.get("model_type") != "gpt_neox":
        raise ValueError(
            f"config.json has model_type {hf.get('model_type')!r}; only 'gpt_neox' (Pythia) imports"
        )
    if rope.get("rope_type", "default") != "default" or hf.get("rope_scaling"):
        raise ValueError(
            f"config.json: RoPE scaling {rope.get('rope_type') or hf.get('rope_scaling')} is not supported"
        )
    if hf.get("hidden_act", "gelu") not in _ACTIVATIONS:
        raise ValueError(
            f"config.json: hidden_act {hf['hidden_act']!r} is not supported; use one of {list(_ACTIVATIONS)}"
        )
    if not hf.get("attention_bias", True):
        raise ValueError(
            "config.json: attention_bias=false is not supported (GPT-NeoX MLPs always have biases)"
        )
    switches = {
        **GPT_NEOX,
        "mlp": _ACTIVATIONS[hf.get("hidden_act", "gelu")],
        "parallel_residual": hf.get("use_parallel_residual", True),
        "rotary_pct": rope.get("partial_rotary_factor", hf.get("rotary_pct", 0.25)),
    }
    return ModelConfig(
        vocab=vocab,
        n_layer=hf["num_hidden_layers"],
        n_head=hf["num_attention_heads"],
        d_model=hf["hidden_size"],
        d_ff=hf["intermediate_size"],
        norm_eps=hf.get("layer_norm_eps", 1e-5),
        rope_theta=rope.get("rope_theta", hf.get("rotary_emb_base", 10000.0)),
        tie_embeddings=hf.get("tie_word_embeddings", False),
        **switches,
    )


def load_hf_weights(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint directory: model.safetensors, pytorch_model.bin, or their sharded indexes."""
    from safetensors.torch import load_file

    for name, load in [
        ("model.safetensors", lambda f: load_file(str(f))),
        ("pytorch_model.bin", lambda f: torch.load(f, map_location="cpu", weights_only=True)),
    ]:
        index = path / f"{name}.index.json"
        files = (
            sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() else [name]
        )
        if all((path / f).is_file() for f in files):
            return {k: v for f in files for k, v in load(path / f).items()}
    raise FileNotFoundError(
        f"{path}: no model.safetensors or pytorch_model.bin (or their .index.json shards)"
    )


def _qkv_to_ours(t: torch.Tensor, n_head: int) -> torch.Tensor:
    """GPT-NeoX packs q, k, v per head: rows (nh, 3, hd) -> ours (3, nh, hd). Works for weight and bias."""
    rest = t.shape[1:]
    return t.view(n_head, 3, -1, *rest).transpose(0, 1).reshape(-1, *rest)  # (3 * nh * hd, ...)


def _new_rows(table: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """n rows at the mean of `table`'s rows plus noise of 1% of their std."""
    noise = torch.randn(n, table.shape[1], generator=generator, dtype=table.dtype)
    return table.mean(0, keepdim=True) + 0.01 * table.std() * noise


def from_hf_gpt_neox(
    path: str | Path,
    num_codebooks: int = 8,
    codebook_size: int = 1024,
    task_names: tuple[str, ...] = DEFAULT_TASKS,
    seed: int = 0,
) -> tuple[AudioLanguageModel, HFTokenizer | None]:
    """Import a GPT-NeoX checkpoint directory as an AudioLanguageModel with K audio codebooks.

    Returns the model (float32, eval mode) and the directory's tokenizer (None without a tokenizer.json).
    """
    path = Path(path)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(
            f"{config_file} not found: expected a Hugging Face GPT-NeoX checkpoint directory"
        )
    hf = json.loads(config_file.read_text())
    vocab = Vocab(
        text_size=hf["vocab_size"],
        num_codebooks=num_codebooks,
        codebook_size=codebook_size,
        task_names=task_names,
    )
    torch.manual_seed(seed)
    model = AudioLanguageModel(neox_model_config(hf, vocab))
    weights = {k.removeprefix("gpt_neox."): v.float() for k, v in load_hf_weights(path).items()}
    state = model.state_dict()
    for i in range(model.config.n_layer):
        for ours, theirs in _LAYER_KEYS.items():
            state[f"blocks.{i}.{ours}"] = _pop(weights, f"layers.{i}.{theirs}", path)
        for key in ("attn.qkv.weight", "attn.qkv.bias"):
            state[f"blocks.{i}.{key}"] = _qkv_to_ours(state[f"blocks.{i}.{key}"], model.config.n_head)
    state["norm.weight"], state["norm.bias"] = (
        _pop(weights, "final_layer_norm.weight", path),
        _pop(weights, "final_layer_norm.bias", path),
    )
    g = torch.Generator().manual_seed(seed)
    n_new = vocab.text_vocab_size - vocab.text_size
    embed = _pop(weights, "embed_in.weight", path)
    state["text_embed.weight"] = torch.cat([embed, _new_rows(embed, n_new, g)])
    if model.config.tie_embeddings:
        state["text_head.weight"] = state["text_embed.weight"]
    else:
        head = _pop(weights, "embed_out.weight|lm_head.weight", path)  # transformers 5 names it lm_head
        state["text_head.weight"] = torch.cat([head, _new_rows(head, n_new, g)])
    unused = [k for k in weights if not k.endswith(_IGNORED)]
    if unused:
        raise ValueError(
            f"{path}: weights {unused[:5]} have no place in a GPT-NeoX trunk; is this a Pythia checkpoint?"
        )
    model.load_state_dict(state)
    tokenizer = HFTokenizer(path) if (path / HFTokenizer.FILE).is_file() else None
    return model.eval(), tokenizer


def _pop(weights: dict[str, torch.Tensor], key: str, path: Path) -> torch.Tensor:
    """Remove and return weight `key`; `key` may be `a|b` for a name that changed between versions."""
    for name in key.split("|"):
        if name in weights:
            return weights.pop(name)
    raise ValueError(f"{path}: weight {key!r} missing; is this a GPTNeoXForCausalLM checkpoint?")


def convert_gpt_neox(src: str | Path, out: str | Path, **kwargs: Any) -> AudioLanguageModel:
    """Import `src` (see `from_hf_gpt_neox`) and save it to `out` with its tokenizer.json: a checkpoint
    with no codec and no trained task yet, for `audiollm fit` to start from."""
    model, tokenizer = from_hf_gpt_neox(src, **kwargs)
    Checkpoint(model.config, text_tokenizer="hf", tasks=()).save(out, model, tokenizer)
    return model
