"""The shipped default model `tiny` (audiollm/assets/tiny): within its size budget, loads by name, and
does what its MODEL_CARD.md says it does, on real recordings it never trained on."""

import json

import jiwer
import pytest

from audiollm import AudioLM
from audiollm.api import PRETRAINED
from audiollm.eval.asr import normalize
from tests.conftest import DIGITS

TINY = PRETRAINED["tiny"]


def test_tiny_ships_within_50_mib_as_safetensors_with_a_card():
    files = [f for f in TINY.rglob("*") if f.is_file()]
    assert sum(f.stat().st_size for f in files) <= 50 * 2**20
    assert {f.suffix for f in files} <= {".json", ".safetensors", ".model", ".md"}  # nothing to unpickle
    card = (TINY / "MODEL_CARD.md").read_text()
    assert "## Evaluation" in card and "FSDD" in card
    assert set(json.loads((TINY / "config.json").read_text())["tasks"]) == {
        "asr",
        "tts",
        "music",
        "sfx",
        "continue",
    }


def test_every_shipped_tensor_is_finite():
    """A float16 overflow (the codec's latent-norm variance became inf) once made tiny encode all audio as noise."""
    from safetensors.torch import load_file

    for weights in TINY.rglob("model.safetensors"):
        for name, tensor in load_file(str(weights)).items():
            assert not tensor.is_floating_point() or tensor.isfinite().all(), f"{weights}: {name}"


@pytest.fixture(scope="module")
def tiny() -> AudioLM:
    return AudioLM.from_pretrained("tiny")


def test_tiny_transcribes_spoken_digits_it_never_heard(tiny, shared_data):
    # FSDD's official test takes (0-4); training used takes 5-49. The card reports WER 0.34 on all 200
    # (chance is about 0.9; 0.25 on these 40); a broken encoder or decoder path lands near chance.
    folder = shared_data / "fsdd_spoken_digits" / "recordings"
    clips = [(folder / f"{d}_{speaker}_{take}.wav", DIGITS[d])
             for d in range(10) for speaker in ("jackson", "theo") for take in (0, 1)]  # fmt: skip
    heard = tiny.transcribe([str(path) for path, _ in clips])
    assert len(heard) == len(clips) and all(isinstance(h, str) for h in heard)
    wer = jiwer.wer([normalize(t) for _, t in clips], [normalize(h) or "-" for h in heard])
    assert wer < 0.5, list(zip([t for _, t in clips], heard, strict=True))


def test_tiny_speaks_and_continues(tiny):
    wav, sr = tiny.synthesize("The police are shadowing her.", max_seconds=4.0, seed=0)
    assert sr == 16000 and 0.3 * sr < len(wav) <= 4.0 * sr and float(abs(wav).max()) > 0.01
    longer, sr2 = tiny.continue_audio((wav, sr), duration=1.0, seed=0)
    assert sr2 == sr and longer.shape[-1] >= wav.shape[-1] + 0.9 * sr
