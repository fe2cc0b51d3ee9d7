"""Import a tiny random GPT-NeoX made here with transformers and compare logits with transformers'."""

import json

import pytest
import torch

from audiollm.cli import main
from audiollm.convert import from_hf_gpt_neox
from audiollm.model import AudioLanguageModel

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

VOCAB_SIZE = 96


def save_tiny_neox(path, weights: str = "safetensors", **overrides) -> torch.nn.Module:
    """A random GPTNeoXForCausalLM and a word-level tokenizer.json in `path`."""
    torch.manual_seed(0)
    sizes = dict(
        vocab_size=VOCAB_SIZE,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
    )
    config = transformers.GPTNeoXConfig(
        **{**sizes, "max_position_embeddings": 128, "rotary_pct": 0.5, **overrides}
    )
    hf = transformers.GPTNeoXForCausalLM(config).eval()
    with torch.no_grad():  # random biases and norms, so that every imported tensor matters
        for name, p in hf.named_parameters():
            if name.endswith("bias") or "layernorm" in name or "layer_norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    hf.save_pretrained(path)
    if weights == "bin":
        torch.save(hf.state_dict(), path / "pytorch_model.bin")
        (path / "model.safetensors").unlink()
    words = {f"w{i}": i for i in range(VOCAB_SIZE - 1)} | {"[UNK]": VOCAB_SIZE - 1}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(words, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.save(str(path / "tokenizer.json"))
    return hf


def assert_same_logits(model, hf, seed: int = 0):
    ids = torch.randint(0, VOCAB_SIZE, (2, 17), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        expected = hf(ids).logits
        ours = model.text_logits(ids)
    assert ours.shape[-1] == model.config.vocab.text_vocab_size
    torch.testing.assert_close(ours[..., :VOCAB_SIZE], expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"use_parallel_residual": False, "hidden_act": "gelu_new"},
        {"rotary_pct": 1.0, "rotary_emb_base": 500.0},
    ],
    ids=["pythia", "sequential_tanh", "full_rotary"],
)
def test_text_logits_equal_transformers(tmp_path, overrides):
    hf = save_tiny_neox(tmp_path, **overrides)
    model, tokenizer = from_hf_gpt_neox(tmp_path, num_codebooks=4, codebook_size=32)
    assert_same_logits(model, hf)
    assert tokenizer.encode("w3 w17 nope") == [3, 17, VOCAB_SIZE - 1]
    assert tokenizer.decode([3, 17]) == "w3 w17"
    v = model.config.vocab
    assert (v.text_size, v.num_codebooks, v.codebook_size) == (VOCAB_SIZE, 4, 32)
    new_rows = model.text_embed.weight[VOCAB_SIZE:]  # specials start near the mean text embedding
    assert torch.allclose(new_rows, model.text_embed.weight[:VOCAB_SIZE].mean(0), atol=0.01)
    assert not torch.equal(new_rows[0], new_rows[1])


def test_pytorch_model_bin_loads_without_unpickling_code(tmp_path):
    hf = save_tiny_neox(tmp_path, weights="bin")
    model, _ = from_hf_gpt_neox(tmp_path)
    assert_same_logits(model, hf, seed=1)


def test_cli_writes_a_checkpoint_that_loads(tmp_path, capsys):
    src, out = tmp_path / "pythia", tmp_path / "ours"
    hf = save_tiny_neox(src)
    assert main(["convert", "gpt-neox", str(src), "--out", str(out), "--num-codebooks", "2"]) == 0
    assert "token ids" in capsys.readouterr().out
    assert (out / "tokenizer.json").is_file()
    assert json.loads((out / "config.json").read_text())["model"]["vocab"]["num_codebooks"] == 2
    assert_same_logits(AudioLanguageModel.from_pretrained(out), hf)


def test_errors_name_the_file(tmp_path, capsys):
    assert main(["convert", "gpt-neox", str(tmp_path), "--out", str(tmp_path / "o")]) == 1
    assert "config.json" in capsys.readouterr().err
    save_tiny_neox(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"no model\.safetensors or pytorch_model\.bin"):
        from_hf_gpt_neox(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "model_type": "llama"}))
    with pytest.raises(ValueError, match="gpt_neox"):
        from_hf_gpt_neox(tmp_path)
