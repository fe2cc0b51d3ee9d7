"""Int8 quantisation (issue 17): smaller weights, logits and greedy tokens close to float32, generation
with batching and the static KV cache, the CPU layer against its integer reference and independent of the
batch, the CUDA layer weight-only, bad schemes refused, the CLI flag end to end."""

import copy

import pytest
import torch
from torch import nn

from audiollm import AudioLM
from audiollm.generate import Sampling, generate
from audiollm.model import PRESETS, AudioLanguageModel, ModelConfig, input_major
from audiollm.quantize import ACT_LEVELS, Int8Linear, quantize, weight_bytes, weight_codes
from audiollm.tasks import Prompt, Template
from audiollm.vocab import Vocab

VOCAB = Vocab(text_size=64, num_codebooks=3, codebook_size=32)


def _models(init_std: float = 0.02, device: str = "cpu") -> tuple[AudioLanguageModel, AudioLanguageModel]:
    """A float32 debug model and its int8 copy. A larger init_std makes distributions peaked, so greedy
    choices are decided by margins much larger than the quantisation error."""
    torch.manual_seed(0)
    config = ModelConfig(**PRESETS["debug"], vocab=VOCAB, init_std=init_std)
    fp32 = AudioLanguageModel(config).to(device).eval()
    return fp32, quantize(copy.deepcopy(fp32))


def _inputs(B: int = 2, S: int = 7) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    text = torch.randint(0, VOCAB.text_vocab_size, (B, S))
    audio = torch.randint(0, VOCAB.codebook_size, (B, S, VOCAB.num_codebooks))
    return text, audio, torch.rand(B, S) < 0.5


def test_int8_weights_are_over_3x_smaller_and_logits_close():
    fp32, int8 = _models()
    n_linear = sum(isinstance(m, nn.Linear) for m in fp32.modules())
    assert not any(isinstance(m, nn.Linear) for m in int8.modules())  # on CPU each became an Int8Linear
    assert sum(isinstance(m, Int8Linear) for m in int8.modules()) == n_linear
    assert weight_bytes(fp32, linear_only=True) >= 3 * weight_bytes(int8, linear_only=True)
    assert weight_bytes(int8) < weight_bytes(fp32)
    x = _inputs()
    with torch.inference_mode():
        for ref, out in zip(fp32(*x), int8(*x), strict=True):  # text and audio logits
            assert (out - ref).abs().max() <= 0.02 * ref.abs().max()  # int8: ~1/127 of each row's range


def test_scales_are_per_output_channel():
    """One output row 1000x larger leaves the other rows as precise as before: a per-tensor scale would
    round them all to zero."""
    torch.manual_seed(0)
    layer = nn.Linear(64, 16, bias=False)
    with torch.no_grad():
        layer.weight[0] *= 1000
    q = quantize(copy.deepcopy(layer))
    x = torch.randn(4, 64)
    with torch.inference_mode():
        ref, out = layer(x), q(x)
    rest = (out[:, 1:] - ref[:, 1:]).abs().max() / ref[:, 1:].abs().max()
    assert rest < 0.02


def test_cpu_int8_linear_matches_its_integer_reference_and_ignores_the_batch():
    """Per token: x / max|x| rounded to ACT_LEVELS codes, times the weight's int8 codes and scales, exact
    in int32. A token's codes do not depend on the other tokens, so the cache and batching agree."""
    torch.manual_seed(0)
    layer = nn.Linear(64, 48)
    input_major(layer)  # the model's strided layout
    q = quantize(copy.deepcopy(layer))
    assert isinstance(q, Int8Linear)
    x = torch.randn(5, 3, 64)
    x[0, 0] *= 100  # a loud token leaves the others' precision alone
    codes = weight_codes(layer.weight)
    w = codes.int_repr().double() * codes.q_per_channel_scales()[:, None]  # (48, 64) dequantised
    amax = x.abs().amax(-1, keepdim=True)  # (5, 3, 1)
    xq = torch.round(x / amax * ACT_LEVELS).double()  # (5, 3, 64) codes in [-63, 63]
    ref = (xq @ w.t()) * amax.double() / ACT_LEVELS + layer.bias.double()  # (5, 3, 48)
    with torch.inference_mode():
        out = q(x)
        assert ((out.double() - ref).abs() <= 1e-5 * ref.abs().amax(-1, keepdim=True)).all()
        assert torch.equal(q(x[:, 1:]), out[:, 1:])  # the same bits in a smaller batch
        alone = torch.stack([q(x[i, j]) for i in range(5) for j in range(3)]).view(5, 3, 48)  # one token's
        # scale goes to the kernel as a number: the same codes, the float scaling rounded another way
        assert ((alone - out).abs() <= 1e-6 * out.abs().amax(-1, keepdim=True)).all()  # float rounding
        assert (out - layer(x)).abs().max() <= 0.02 * layer(x).abs().max()


def test_cpu_int8_keeps_a_bf16_model_in_bf16():
    fp32, _ = _models()
    bf16 = quantize(copy.deepcopy(fp32).to(torch.bfloat16))
    text, audio, is_audio = _inputs()
    with torch.inference_mode():
        for ref, out in zip(fp32(text, audio, is_audio), bf16(text, audio, is_audio), strict=True):
            assert out.dtype == torch.bfloat16
            assert (out.float() - ref).abs().max() <= 0.05 * ref.abs().max()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_int8_is_torchao_weight_only():
    fp32, int8 = _models(device="cuda")
    linear = [m for m in int8.modules() if isinstance(m, nn.Linear)]
    assert linear and all(m.weight.qdata.dtype == torch.int8 for m in linear)
    assert weight_bytes(fp32, linear_only=True) >= 3 * weight_bytes(int8, linear_only=True)
    x = [t.cuda() for t in _inputs()]
    with torch.inference_mode():
        for ref, out in zip(fp32(*x), int8(*x), strict=True):
            assert (out - ref).abs().max() <= 0.02 * ref.abs().max()


def _prompts(n: int) -> list[Prompt]:
    g = torch.Generator().manual_seed(2)
    return [
        Prompt.from_text([VOCAB.bos, *torch.randint(0, VOCAB.text_size, (4,), generator=g).tolist()], VOCAB)
        for _ in range(n)
    ]


@pytest.mark.parametrize("start", ["text", "audio"])  # ASR-like text steps, TTS-like audio frames
def test_int8_greedy_tokens_close_to_fp32_with_batch_and_cache(start):
    """Scored on the float32 model's own greedy continuation (teacher forcing, so one early difference
    does not decide the rest), the int8 model's greedy choice agrees at >= 80% of the steps (CPU int8
    quantises activations too: up to 7x the weight-only logit error on this init_std=0.3 model, most of it
    from the qkv projection; the shipped tiny keeps all 50 FSDD theo_0-4 transcripts); its own generation
    gives the same tokens with and without the static cache, and batched or alone."""
    fp32, int8 = _models(init_std=0.3)
    kw = dict(template=Template(start=start), sampling=Sampling(temperature=0), max_new_tokens=16)
    prompts = _prompts(3)
    ref = generate(fp32, prompts, **kw)
    text = torch.cat([torch.stack([p.text for p in prompts]), ref.text], 1)  # (B, S + N)
    audio = torch.cat([torch.stack([p.audio for p in prompts]), ref.audio], 1)  # (B, S + N, K)
    is_audio = torch.cat([torch.stack([p.is_audio for p in prompts]), ref.is_audio], 1)
    S = len(prompts[0].text)
    with torch.inference_mode():
        picks = [
            [x[:, S - 1 : -1].argmax(-1) for x in m(text, audio, is_audio)] for m in (fp32, int8)
        ]  # per model: text (B, N), audio (B, N, K) greedy choices
    head = 0 if start == "text" else 1  # the text head at text steps, the K audio heads at frames
    assert (picks[0][head] == picks[1][head]).float().mean() >= 0.8
    out = generate(int8, prompts, **kw)
    nocache = generate(int8, prompts, use_cache=False, **kw)
    assert torch.equal(nocache.text, out.text) and torch.equal(nocache.audio, out.audio)
    alone = generate(int8, prompts[1:2], **kw)
    n = int(alone.lengths[0])
    assert torch.equal(alone.audio[0, :n], out.audio[1, :n]) and torch.equal(
        alone.text[0, :n], out.text[1, :n]
    )


def test_bad_scheme_is_refused_naming_the_accepted_values():
    with pytest.raises(ValueError, match=r"quantize='int4' is not supported; accepted values: int8"):
        AudioLM.from_pretrained("tiny", quantize="int4")
    with pytest.raises(ValueError, match="accepted values: int8"):
        quantize(nn.Linear(4, 4), "fp8")


def test_cli_quantize_flag_end_to_end_on_tiny(shared_data, tmp_path, capsys):
    from audiollm.cli import main

    clip = shared_data / "fsdd_spoken_digits" / "recordings" / "4_theo_40.wav"
    assert main(["transcribe", str(clip), "--json", "--quantize", "int8"]) == 0
    assert '"text":' in capsys.readouterr().out
    out = tmp_path / "x.wav"
    assert main(["tts", "four", "-o", str(out), "--max-seconds", "0.3", "--quantize", "int8"]) == 0
    assert out.is_file()
    assert main(["sfx", "rain", "-o", str(out), "--duration", "0.2", "--quantize", "int4"]) == 1
    assert "accepted values: int8" in capsys.readouterr().err
