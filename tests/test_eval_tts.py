import shutil
import subprocess

import numpy as np
import pytest
import torch

from audiollm import audio
from audiollm.data.manifest import Record
from audiollm.eval.asr import error_rates
from audiollm.eval.tts import Recognizer, evaluate_tts

pytest.importorskip("pocketsphinx")
pytestmark = pytest.mark.skipif(shutil.which("flite") is None, reason="needs flite (apt-get install flite)")

SENTENCES = ["the weather is nice today", "please call me tomorrow morning", "seven three nine"]


def flite(text: str, path) -> str:
    subprocess.run(["flite", "-voice", "slt", "-t", text, "-o", str(path)], check=True)
    return str(path)


@pytest.fixture(scope="module")
def judge():
    return Recognizer()


def test_recognizer_hears_flite_speech(judge, tmp_path):
    heard = []
    for i, text in enumerate(SENTENCES):
        wav, sr = audio.load(flite(text, tmp_path / f"{i}.wav"))
        heard.append(judge(wav, sr))
    assert error_rates(SENTENCES, heard)["wer"] < 0.25


def test_recognizer_results_do_not_depend_on_order_rate_or_shape(judge, tmp_path):
    # Without a front-end reset per utterance, loud noise decoded in between changes this result.
    wav, sr = audio.load(flite("the birch canoe slid on the smooth planks", tmp_path / "a.wav"))
    first = judge(wav, sr)
    judge(0.3 * torch.randn(1, 3 * sr, generator=torch.Generator().manual_seed(0)), sr)
    assert judge(wav, sr) == first, "the front end must be reset between utterances"
    up = audio.resample(wav, sr, 24000)
    assert judge(up[0].numpy(), 24000) == first  # (N,) numpy at another rate
    assert judge(np.zeros(0, np.float32), 16000) == ""


def test_evaluate_tts_reports_generated_beside_reference(lm, judge, tmp_path):
    texts = ["seven three nine", "one two"]
    records = [Record(id=f"r{i}", audio=flite(t, tmp_path / f"{i}.wav"), text=t) for i, t in enumerate(texts)]
    report = evaluate_tts(lm, records, recognizer=judge, seed=0, max_seconds=0.5)
    generated, reference = report.summary
    assert (generated["system"], reference["system"]) == ("generated", "reference")
    assert reference["wer"] < 0.5, "the judge hears the reference recordings"
    assert reference["wer"] == error_rates(texts, [judge(*audio.load(r.audio)) for r in records])["wer"]
    wav, sr = lm.synthesize(texts[0], max_seconds=0.5, seed=0)
    assert report.items[0]["generated_heard"] == judge(wav, sr)
    assert report.items[0]["generated_seconds"] == len(wav) / sr
    assert generated["words"] == reference["words"] == 5
    assert generated["rtf"] > 0 and reference["rtf"] is None


def test_evaluate_tts_names_the_record_the_model_rejects(lm, judge, tmp_path):
    record = Record(id="long", audio=flite("one", tmp_path / "x.wav"), text="one two three " * 20)
    with pytest.raises(ValueError, match="record 'long': text is too long"):
        evaluate_tts(lm, [record], recognizer=judge)
