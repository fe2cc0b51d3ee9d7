"""The offline corpus builders: speech, music and sound effects made on this machine, deterministic by seed."""

import json
import random
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiollm.data.manifest import read_manifest
from data_prep import common, offline_music, offline_sfx, offline_speech

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def records(out: Path) -> dict[str, list]:
    summary = json.loads((out / "summary.json").read_text())
    return {s: list(read_manifest(out / f"{s}.jsonl")) for s in summary["splits"]}


def lines(out: Path) -> list[str]:
    return [line for p in sorted(out.glob("*.jsonl")) for line in p.read_text().splitlines()]


def check_audio(recs: list, budget_s: float) -> None:
    """Every file exists at 16 kHz mono, its duration is right, and the total stays within the budget."""
    for r in recs:
        meta = sf.info(r.audio)
        assert (meta.samplerate, meta.channels) == (16000, 1)
        assert meta.frames / 16000 == pytest.approx(r.duration, abs=1e-3)
    assert 0 < sum(r.duration for r in recs) <= budget_s


def test_wordnet_gives_many_distinct_plain_sentences():
    sentences = offline_speech.load_sentences(offline_speech.WORDNET_DIR)
    assert len(sentences) > 20000
    assert len({s.lower() for s in sentences}) == len(sentences)
    assert all(s[0].isupper() and s[-1] in ".?!" and not any(c.isdigit() for c in s) for s in sentences)


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("speech")
    offline_speech.prepare_offline_speech(None, out, minutes=0.5, seed=0, workers=1)
    return out


def test_speech_splits_sentences_and_held_out_voice(speech):
    splits = records(speech)
    assert set(splits) == {"train", "valid", "test", "test_unseen"}
    texts = {s: {r.text for r in rs} for s, rs in splits.items()}
    assert not texts["train"] & (texts["test"] | texts["test_unseen"] | texts["valid"])
    held_out = offline_speech.HELD_OUT_VOICE.replace(":", "-")
    assert {r.speaker for r in splits["test_unseen"]} == {held_out}
    assert held_out not in {r.speaker for s in ("train", "valid", "test") for r in splits[s]}
    assert len({r.speaker for r in splits["train"]}) >= 3
    for split, rs in splits.items():
        assert all(common.hash_split(r.text.lower()) == split.replace("_unseen", "") for r in rs)
    check_audio([r for rs in splits.values() for r in rs], 30.0)


@pytest.mark.slow
def test_speech_audio_says_its_text(speech):
    """An independent recogniser (pocketsphinx, good on flite voices) hears the manifest's text."""
    pocketsphinx = pytest.importorskip("pocketsphinx")
    jiwer = pytest.importorskip("jiwer")
    decoder = pocketsphinx.Decoder(samprate=16000, logfn="/dev/null")
    refs, hyps = [], []
    for r in [r for rs in records(speech).values() for r in rs if r.speaker.startswith("flite")]:
        pcm, _ = sf.read(r.audio, dtype="int16")
        decoder.reinit_feat()  # its front end keeps state between utterances otherwise
        decoder.start_utt()
        decoder.process_raw(pcm.tobytes(), full_utt=True)
        decoder.end_utt()
        hyps.append(decoder.hyp().hypstr if decoder.hyp() else "")
        refs.append(re.sub(r"[^a-z' ]", " ", r.text.lower()))
    assert len(refs) >= 5
    assert jiwer.wer(refs, hyps) < 0.4


def test_speech_is_deterministic_and_reruns_do_no_work(speech, tmp_path, monkeypatch):
    again = tmp_path / "again"
    offline_speech.prepare_offline_speech(None, again, minutes=0.5, seed=0, workers=2)
    assert lines(again) == lines(speech)
    other = tmp_path / "other"
    offline_speech.prepare_offline_speech(None, other, minutes=0.5, seed=1, workers=1)
    assert lines(other) != lines(speech)

    def no_work(*args, **kwargs):
        raise AssertionError("synthesised again")

    monkeypatch.setattr(offline_speech, "produce", no_work)
    assert offline_speech.prepare_offline_speech(None, again, minutes=0.5, seed=0) == again / "train.jsonl"


def test_speech_resumes_an_interrupted_run_without_resynthesising(speech, tmp_path, monkeypatch):
    out = tmp_path / "resumed"
    offline_speech.prepare_offline_speech(None, out, minutes=0.5, seed=0, workers=1)
    (out / "summary.json").unlink()  # as if killed before the end
    monkeypatch.setattr(
        offline_speech.subprocess, "run", lambda *a, **k: pytest.fail("ran a synthesiser again")
    )
    offline_speech.prepare_offline_speech(None, out, minutes=0.5, seed=0, workers=1)
    assert lines(out) == lines(speech)


def test_music_renders_scores_with_metadata_captions(tmp_path):
    offline_music.prepare_offline_music(None, tmp_path / "a", minutes=0.25, seed=0, workers=1)
    recs = [r for rs in records(tmp_path / "a").values() for r in rs]
    check_audio(recs, 15.0)
    for r in recs:
        assert r.extra["composer"] in r.caption and r.extra["instrument"] in r.caption
        assert r.extra["key"] in r.caption and f"{r.extra['bpm']} BPM" in r.caption
        assert (offline_music.corpus_root() / r.extra["score"]).is_file()
    offline_music.prepare_offline_music(None, tmp_path / "b", minutes=0.25, seed=0, workers=1)
    assert lines(tmp_path / "a") == lines(tmp_path / "b")


@pytest.mark.skipif(not (SHARED / "music_cc").is_dir(), reason="../shared/data not present")
def test_music_adds_the_real_recordings(tmp_path):
    offline_music.prepare_offline_music(SHARED / "music_cc", tmp_path, minutes=0.1, seed=0, workers=1)
    real = [r for r in records(tmp_path)["train"] if "music_cc" in r.audio]
    assert {Path(r.audio).name for r in real} == {row.split("\t")[0] for row in
                                                  (SHARED / "music_cc" / "index.tsv").read_text().splitlines()[1:]}  # fmt: skip
    vibe = [r for r in real if "Vibe_Ace" in r.audio]
    assert [r.start for r in vibe] == [0.0, 20.0, 40.0] and vibe[
        0
    ].caption == "Vibe Ace, a recording by Kevin MacLeod."


def test_sfx_kinds_captions_and_determinism(tmp_path):
    offline_sfx.prepare_offline_sfx(None, tmp_path / "a", minutes=1.0, seed=0)
    recs = [r for rs in records(tmp_path / "a").values() for r in rs]
    check_audio(recs, 60.0)
    assert len({r.extra["label"] for r in recs}) == len(offline_sfx.KINDS)  # one round covers every kind
    assert all(r.caption.endswith(".") for r in recs)
    offline_sfx.prepare_offline_sfx(None, tmp_path / "b", minutes=1.0, seed=0)
    assert lines(tmp_path / "a") == lines(tmp_path / "b")
    a = sf.read(tmp_path / "a" / recs[0].audio)[0]
    assert (a == sf.read(tmp_path / "b" / recs[0].audio)[0]).all()


@pytest.mark.skipif(not (SHARED / "sound_events").is_dir(), reason="../shared/data not present")
def test_sfx_adds_the_real_sound_events(tmp_path):
    offline_sfx.prepare_offline_sfx(SHARED / "sound_events", tmp_path, minutes=0.1, seed=0)
    real = [r for r in records(tmp_path)["train"] if "sound_events" in r.audio]
    assert {r.caption for r in real} == {
        "A field recording of a bird chirp.",
        "A field recording of a whale song.",
        "A field recording of a dog.",
    }


def test_music_render_ends_even_when_parts_share_a_channel(tmp_path):
    # This excerpt leaves an oboe voice hanging; without All Sound Off fluidsynth renders it forever.
    clip = offline_music.Clip(
        "music-0001", tmp_path / "x.wav", "mozart/k80/movement4.mxl", "mozart", 68, 108, -2, 8.0, "test"
    )
    assert offline_music.render(clip) == pytest.approx(8.0)
    assert "oboe" in json.loads((tmp_path / "x.json").read_text())["caption"].lower()


@pytest.mark.parametrize(("kind", "key"), [("beeps", "count"), ("knock", "count"), ("bell", "strikes")])
def test_sfx_sound_has_the_number_of_events_its_caption_says(kind, key):
    draw, synth = offline_sfx.KINDS[kind]
    rng = random.Random(3)
    for _ in range(5):
        params, caption = draw(rng)
        wav = synth(params, np.random.default_rng(0))
        frames = len(wav) // 320
        env = np.abs(wav[: frames * 320]).reshape(frames, 320).max(axis=1)  # (frames,) peak per 20 ms
        env = np.concatenate([[0.0], env])
        onsets = (env[1:] > 2 * env[:-1]) & (env[1:] > 0.2 * env.max())  # a sharp rise from quiet or a tail
        assert onsets.sum() == params[key], caption
