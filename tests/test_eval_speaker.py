import pytest

from audiollm import audio
from audiollm.data.manifest import Record
from audiollm.eval.speaker import embed, evaluate_voice


def fsdd(shared_data, speaker: str, digit: int, take: int) -> Record:
    path = shared_data / "fsdd_spoken_digits" / "recordings" / f"{digit}_{speaker}_{take}.wav"
    return Record(id=path.stem, audio=str(path), text=str(digit), speaker=speaker)


def test_the_encoder_tells_real_speakers_apart(shared_data):
    emb = {}
    for speaker in ("jackson", "theo"):
        wav, sr = audio.load(fsdd(shared_data, speaker, 3, 10).audio, channels=1)
        emb[speaker] = [embed(wav, sr)]
        wav, sr = audio.load(fsdd(shared_data, speaker, 7, 11).audio, channels=1)
        emb[speaker].append(embed(wav, sr))
    same = emb["jackson"][0] @ emb["jackson"][1]
    other = emb["jackson"][0] @ emb["theo"][1]
    assert same > other


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["tts", "continue"])
def test_voice_evaluation_reports_same_and_other_speaker_similarity(lm, shared_data, mode):
    records = [fsdd(shared_data, s, d, 0) for s in ("jackson", "theo") for d in (1, 2, 3)]
    report = evaluate_voice(lm, records, mode=mode)
    assert [row["system"] for row in report.summary] == [f"{mode} output", "real utterances"]
    assert len(report.items) == 4  # two prompts per speaker (the first record is the anchor)
    for row in report.summary:
        assert -1 <= row["other_speakers"] <= 1 and -1 <= row["same_speaker"] <= 1
    assert report.summary[1]["same_wins"] >= 0.5  # the encoder itself separates these real speakers


def test_voice_evaluation_needs_two_speakers(lm, shared_data):
    with pytest.raises(ValueError, match="2 speakers"):
        evaluate_voice(lm, [fsdd(shared_data, "jackson", d, 0) for d in range(3)])
