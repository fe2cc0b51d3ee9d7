import json
import re

import numpy as np
import pytest
import torch

from audiollm import AudioLM, audio, tasks
from audiollm.api import PRETRAINED


def test_transcribe_paths_arrays_and_long_audio(lm, shared_data):
    clip = shared_data / "fsdd_spoken_digits" / "recordings" / "3_theo_40.wav"
    text = lm.transcribe(clip)
    assert isinstance(text, str)
    wav, sr = audio.load(clip)
    assert lm.transcribe([(wav.numpy()[0], sr), clip]) == [text, text]
    long = shared_data / "ljspeech_subset" / "wavs" / "LJ001-0001.flac"  # ~10 s: chunked to fit the context
    assert isinstance(lm.transcribe(long, chunk_seconds=1.0), str)


def test_synthesize_music_and_continue_return_audio(lm, shared_data):
    wav, sr = lm.synthesize("seven", seed=0, max_seconds=0.4)
    again, _ = lm.synthesize("seven", seed=0, max_seconds=0.4)
    assert sr == 24000 and wav.dtype == np.float32 and wav.ndim == 1
    assert np.array_equal(wav, again), "a seed reproduces a run"
    prompt = shared_data / "fsdd_spoken_digits" / "recordings" / "1_theo_5.wav"
    voiced, _ = lm.synthesize("one", voice_prompt=prompt, seed=1, max_seconds=0.4)
    assert voiced.dtype == np.float32
    music, _ = lm.generate_music("a voice says two", duration=0.4, guidance_scale=3.0, seed=0)
    assert music.ndim == 1 and len(music) == 0.4 * 24000  # as long as asked: <eos> is held back till then
    sound, _ = lm.generate_sfx("rain", duration=0.4, seed=0)
    assert len(sound) == 0.4 * 24000
    clip = shared_data / "fsdd_spoken_digits" / "recordings" / "2_theo_5.wav"
    cont, _ = lm.continue_audio(clip, duration=0.2, seed=0)
    assert len(cont) > len(audio.load(clip, 24000)[0][0]) - 400


@pytest.mark.parametrize("pattern", ["delay", "flatten", "parallel"])
def test_continue_audio_adds_the_duration_asked_under_every_pattern(lm, shared_data, pattern):
    """The continuation's step budget comes from the task table: flatten needs K steps a frame, delay
    K - 1 more than frames (a budget of frames + K gave flatten about K times too little audio)."""
    config = lm.config | {"template": {**lm.template, "pattern": pattern}}
    as_pattern = AudioLM(lm.model, lm.tokenizer, lm.codec, config)
    clip = shared_data / "fsdd_spoken_digits" / "recordings" / "2_theo_5.wav"
    frames = lm._encode(clip).shape[-1]
    cont, sr = as_pattern.continue_audio(clip, duration=0.2, seed=0)
    hop = sr / lm.codec.frame_rate  # samples per code frame
    assert len(cont) == (frames + round(0.2 * lm.codec.frame_rate)) * hop


def test_errors_name_the_problem(lm):
    with pytest.raises(FileNotFoundError, match="unknown model 'nope': not one of tiny"):
        AudioLM.from_pretrained("nope")
    speech_only = AudioLM(lm.model, lm.tokenizer, lm.codec, lm.config | {"tasks": ["asr", "tts"]}, "digits")
    with pytest.raises(ValueError, match=r"model 'digits' was not trained for sfx \(its tasks: asr, tts\)"):
        speech_only.generate_sfx("rain", duration=0.2)
    with pytest.raises(ValueError, match=r"text is too long: \d+ tokens, the limit of this model is 24"):
        lm.synthesize("one two three " * 20)
    with pytest.raises(ValueError, match="text is empty"):
        lm.synthesize("  ")
    asr_only = AudioLM(lm.model, lm.tokenizer, lm.codec, lm.config | {"tasks": ["asr"]})
    with pytest.raises(ValueError, match=r"not trained for tts \(its tasks: asr\)"):
        asr_only.synthesize("one")


def test_cli_commands(digits_model, encodec_24k_checkpoint, shared_data, tmp_path, capsys, monkeypatch):
    from audiollm.cli import main

    monkeypatch.setenv("AUDIOLLM_ENCODEC_CHECKPOINT", str(encodec_24k_checkpoint))
    clip = shared_data / "fsdd_spoken_digits" / "recordings" / "4_theo_40.wav"
    assert main(["transcribe", str(clip), "--json", "--model", str(digits_model)]) == 0
    assert '"file":' in capsys.readouterr().out
    out = tmp_path / "x.wav"
    assert (
        main(
            [
                "tts",
                "four",
                "-o",
                str(out),
                "--max-seconds",
                "0.3",
                "--seed",
                "0",
                "--model",
                str(digits_model),
            ]
        )
        == 0
    )
    assert audio.info(out).samplerate == 24000
    assert main(["music", "a voice", "--duration", "0.3", "-o", str(out), "--model", str(digits_model)]) == 0
    assert (
        main(["continue", str(clip), "--duration", "0.2", "-o", str(out), "--model", str(digits_model)]) == 0
    )
    capsys.readouterr()
    assert main(["sfx", "rain", "--duration", "0.2", "-o", str(out), "--model", str(digits_model)]) == 0
    capsys.readouterr()
    assert main(["sfx", "  ", "-o", str(out), "--model", str(digits_model)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("audiollm sfx: error:") and "caption is empty" in err and "\n" not in err


@pytest.mark.slow
def test_quickstart_pipeline_end_to_end(tmp_path, shared_data, encodec_24k_checkpoint, monkeypatch):
    """`audiollm quickstart` on a tiny budget: prepare, tokenise, train, evaluate, report, samples."""
    from audiollm.cli import main
    from tests.conftest import REPO

    mini = tmp_path / "shared" / "fsdd_spoken_digits" / "recordings"
    mini.mkdir(parents=True)
    for take in (0, 1, 5, 6):
        for d in range(10):
            name = f"{d}_theo_{take}.wav"
            (mini / name).symlink_to(shared_data / "fsdd_spoken_digits" / "recordings" / name)
    monkeypatch.setenv("AUDIOLLM_ENCODEC_CHECKPOINT", str(encodec_24k_checkpoint))
    monkeypatch.chdir(REPO)  # the recipe is read from the repository
    out = tmp_path / "qs"
    argv = ["quickstart", "--out", str(out), "--codec", "encodec_24khz", "--shared", str(tmp_path / "shared")]
    assert (
        main([*argv, "--minutes", "0.2", "--max-steps", "2", "--train-minutes", "5", "--eval-limit", "3"])
        == 0
    )
    report = (out / "REPORT.md").read_text()
    assert "## ASR on fsdd/test" in report and "## TTS intelligibility" in report
    assert (out / "model" / "model.safetensors").is_file() and list((out / "samples").glob("*.wav"))
    assert (out / "eval" / "asr_fsdd_test.json").is_file()
    assert "## Samples: this run's model" in report
    assert "![training and validation loss](loss.png)" in report and (out / "loss.png").stat().st_size > 0
    assert (out / "samples" / "tts_spectrograms.png").stat().st_size > 0
    if (PRETRAINED["tiny"] / "config.json").is_file():  # the shipped model speaks and listens beside it
        assert "## Samples: the shipped `tiny`" in report and list((out / "samples").glob("tiny_tts_*.wav"))


def test_long_audio_is_read_and_encoded_one_chunk_at_a_time(lm, speech_file, monkeypatch):
    """Memory flat in the file's length: the codec never sees more than one chunk of audio."""
    whole = lm.transcribe(speech_file, chunk_seconds=0.5)
    seen: list[int] = []
    encode = lm.codec.encode

    def counted(wav):
        seen.append(wav.shape[-1])
        return encode(wav)

    monkeypatch.setattr(lm.codec, "encode", counted)
    assert lm.transcribe(speech_file, chunk_seconds=0.5) == whole
    window = 38 / 75  # 0.5 s in code frames of the 75 Hz codec
    assert len(seen) == -(-audio.info(speech_file).duration // window), "20 windows, not one 10-s encode"
    assert max(seen) == round(window * 24000) and sum(seen) == pytest.approx(9.655 * 24000, abs=100)
    seen.clear()
    lm.transcribe(speech_file)  # the default chunk: the most audio the model's ASR context holds
    limit = tasks.max_frames(lm.max_len // 2, lm.vocab.num_codebooks, lm.pattern) / lm.codec.frame_rate
    assert len(seen) > 1 and max(seen) <= round(limit * 24000)
    wav, sr = audio.load(speech_file)
    seen.clear()
    assert lm.transcribe((wav.numpy()[0], sr), chunk_seconds=0.5) == whole, "an array is chunked alike"
    assert max(seen) == round(window * 24000)


def test_array_inputs_are_checked_and_stereo_read_in_either_layout(lm, shared_data):
    left, sr = audio.load(shared_data / "fsdd_spoken_digits" / "recordings" / "3_theo_40.wav")
    left = left.numpy()[0]
    right = 0.5 * np.roll(left, 400)  # a different channel, so a downmix bug shows
    soundfile_layout = np.stack([left, right], axis=1)  # (N, 2), as soundfile.read returns
    mono = lm.transcribe((soundfile_layout.mean(axis=1), sr))
    assert lm.transcribe((soundfile_layout, sr)) == mono
    assert lm.transcribe((soundfile_layout.T, sr)) == mono, "(C, N) too"
    codes = lm._encode((soundfile_layout, sr))
    assert torch.equal(codes, lm._encode((soundfile_layout.mean(axis=1), sr))), "the values, not the shape"
    nan = left.copy()
    nan[100] = np.nan
    cases = [
        ((nan, sr), r"^audio: contains NaN or infinite samples$"),
        ((np.full(8000, np.inf, np.float32), sr), "contains NaN or infinite samples"),
        ((np.zeros(0, np.float32), sr), r"audio: is empty \(shape \(0,\)\): no samples"),
        ((left, 0), r"audio: the sample rate must be a positive whole number of Hz, got 0"),
        ((left, float("nan")), "the sample rate must be a positive whole number"),
        ((left[None, None], sr), r"must be shaped \(N,\), \(C, N\) or \(N, C\), got \(1, 1, \d+\)"),
    ]
    for item, message in cases:
        with pytest.raises(audio.AudioError, match=message):
            lm.transcribe(item)
    with pytest.raises(audio.AudioError, match=r"^inputs\[1\]: contains NaN"):
        lm.transcribe([(left, sr), (nan, sr)])


def test_bad_arguments_name_the_argument(lm):
    for call, message in [
        (lambda: lm.synthesize(None), "text must be a string or a non-empty list of strings, got None"),
        (lambda: lm.synthesize([]), "text must be a string or a non-empty list of strings"),
        (lambda: lm.generate_music(None), "caption must be a string or a non-empty list"),
        (lambda: lm.synthesize("one", max_seconds=0), "max_seconds must be a positive number of seconds, got 0"),
        (lambda: lm.synthesize("one", max_seconds=float("nan")), "max_seconds must be a positive number of seconds, got nan"),
        (lambda: lm.generate_music("a voice", duration=-1), "duration must be a positive number of seconds, got -1"),
        (lambda: lm.generate_sfx("rain", duration=float("inf")), "duration must be a positive number of seconds, got inf"),
        (lambda: lm.continue_audio((np.ones(800, np.float32), 8000), duration=0), "duration must be a positive"),
        (lambda: lm.transcribe((np.ones(800, np.float32), 8000), chunk_seconds=0), "chunk_seconds must be a positive"),
    ]:  # fmt: skip
        with pytest.raises(ValueError, match=re.escape(message)):
            call()


def test_cli_transcribe_reports_each_bad_file_and_transcribes_the_rest(
    digits_model, encodec_24k_checkpoint, shared_data, tmp_path, capsys, monkeypatch
):
    from audiollm.cli import main

    monkeypatch.setenv("AUDIOLLM_ENCODEC_CHECKPOINT", str(encodec_24k_checkpoint))
    good = shared_data / "fsdd_spoken_digits" / "recordings" / "4_theo_40.wav"
    other = shared_data / "fsdd_spoken_digits" / "recordings" / "5_theo_40.wav"
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" * 10)
    files = [str(good), str(bad), str(other), str(tmp_path / "missing.wav")]
    assert main(["transcribe", *files, "--json", "--model", str(digits_model)]) == 1
    out, err = capsys.readouterr()
    assert [json.loads(line)["file"] for line in out.splitlines()] == [str(good), str(other)]
    lines = err.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"audiollm transcribe: error: {bad}: unreadable")
    assert lines[1] == f"audiollm transcribe: error: {tmp_path / 'missing.wav'}: file not found"
    assert main(["transcribe", str(good), "--model", str(digits_model)]) == 0
