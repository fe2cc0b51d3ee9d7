"""Generation's mode rules on a scripted model: the text head is steered to one chosen token per step, so
each test reads exactly when `<eos>` is allowed and which mode a row is in after a marker."""

import torch

from audiollm.generate import Sampling, generate
from audiollm.model import GPT_NEOX, PRESETS, AudioLanguageModel, ModelConfig
from audiollm.tasks import Prompt, Template
from audiollm.vocab import Vocab

VOCAB = Vocab(text_size=40, num_codebooks=2, codebook_size=16)
GREEDY = Sampling(temperature=0)


def scripted(wanted: list[int]) -> AudioLanguageModel:
    """A debug model whose text head prefers wanted[n] at its n-th call (prefill is call 0; the last id
    repeats), by a large margin, wherever the mode rules allow it."""
    torch.manual_seed(0)
    model = AudioLanguageModel(ModelConfig(**PRESETS["debug"], **GPT_NEOX, vocab=VOCAB)).eval()
    calls = [0]

    def steer(module, inputs, output):
        bias = torch.zeros_like(output)
        bias[..., wanted[min(calls[0], len(wanted) - 1)]] = 1e4
        calls[0] += 1
        return output + bias

    model.text_head.register_forward_hook(steer)
    return model


def test_eos_is_allowed_exactly_from_min_new_tokens():
    for m in (0, 1, 4):
        model = scripted([VOCAB.eos])  # the model wants to stop at once, every step
        out = generate(model, [Prompt.from_text([VOCAB.bos, 5], VOCAB)], sampling=GREEDY,
                       max_new_tokens=10, min_new_tokens=m)  # fmt: skip
        assert int(out.lengths[0]) == m + 1, f"min_new_tokens={m}: <eos> written at step {m}, not later"
        assert int(out.text[0, m]) == VOCAB.eos and VOCAB.eos not in out.text[0, :m].tolist()


def test_text_marker_leaves_audio_mode_and_audio_marker_enters_it():
    wanted = [VOCAB.audio, VOCAB.text, 7, 8, VOCAB.audio, VOCAB.audio, VOCAB.eos]
    model = scripted(wanted)
    prompt = Prompt.from_text([VOCAB.bos, VOCAB.task("tts"), VOCAB.audio], VOCAB)
    out = generate(model, [prompt], template=Template(start="audio", switch=True), sampling=GREEDY,
                   max_new_tokens=12, pattern="parallel")  # fmt: skip
    n = int(out.lengths[0])
    # step 0: an audio frame; 1: <text> ends audio; 2-3: text ids (only text mode allows them); 4: <audio>
    # opens audio again; 5: a frame; 6: <eos>
    assert out.is_audio[0, :n].tolist() == [True, False, False, False, False, True, False]
    assert (
        out.text[0, 1:5].tolist() == [VOCAB.text, 7, 8, VOCAB.audio] and int(out.text[0, n - 1]) == VOCAB.eos
    )
