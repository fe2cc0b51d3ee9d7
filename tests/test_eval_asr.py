import pytest

from audiollm import audio
from audiollm.data.manifest import Record
from audiollm.eval.asr import error_rates, evaluate_asr, normalize


def digit_records(shared_data, names):
    folder = shared_data / "fsdd_spoken_digits" / "recordings"
    words = {"3": "three", "5": "five", "8": "eight"}
    return [Record(id=n, audio=str(folder / f"{n}.wav"), text=words[n[0]]) for n in names]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello,  World!", "hello world"),
        ("It’s o'clock: 'quoted' words", "it's o'clock quoted words"),
        ("3.5 kg, 1,000 dogs at 10:30.", "3.5 kg 1,000 dogs at 10:30"),
        ("Twenty-one (21) \t snake_case", "twenty one 21 snake case"),
        ("  ", ""),
        ("Ｔｈｒｅｅ ﬁve", "three five"),  # NFKC: full-width letters and the fi ligature are plain letters
        ("①, ²", "1 2"),
    ],
)
def test_normalize_follows_its_documented_rules(text, expected):
    assert normalize(text) == expected


def test_error_rates_match_a_hand_count():
    refs, hyps = ["The cat sat.", "On the mat"], ["the cat sit", "on mat"]
    rates = error_rates(refs, hyps)
    assert rates["words"] == 6
    assert rates["wer"] == pytest.approx(2 / 6)  # one substitution, one deletion
    assert rates["cer"] == pytest.approx(5 / 21)  # "a"->"i"; "the " deleted (4 characters)
    assert error_rates(refs, ["THE CAT, SAT!", "on the mat."]) == {"wer": 0.0, "cer": 0.0, "words": 6}
    assert error_rates(["three"], ["3"])["wer"] == 1.0, "numbers are not spelled out"
    assert error_rates(["café five"], ["cafe\u0301 ﬁve"])["wer"] == 0.0, "one text, two Unicode spellings"


def test_evaluate_asr_scores_the_model_transcripts(lm, shared_data):
    records = digit_records(shared_data, ["3_theo_40", "5_jackson_41", "8_nicolas_42"])
    report = evaluate_asr(lm, records, batch_size=2)
    assert [i["id"] for i in report.items] == [r.id for r in records]
    assert [i["hypothesis"] for i in report.items] == lm.transcribe([r.audio for r in records])
    (row,) = report.summary
    again = error_rates([r.text for r in records], [i["hypothesis"] for i in report.items])
    assert {k: row[k] for k in again} == again
    assert row["seconds"] == pytest.approx(sum(audio.info(r.audio).duration for r in records))
    assert row["rtf"] > 0


def test_evaluate_asr_reads_only_a_record_segment(lm, shared_data):
    (record,) = digit_records(shared_data, ["3_theo_40"])
    record.start, record.duration = 0.1, 0.2
    report = evaluate_asr(lm, [record])
    assert report.items[0]["seconds"] == pytest.approx(0.2)
    wav, sr = audio.load(record.audio, start=0.1, duration=0.2)
    assert report.items[0]["hypothesis"] == lm.transcribe((wav[0].numpy(), sr))
