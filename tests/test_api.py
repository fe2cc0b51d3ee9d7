import numpy as np
import pytest

from audiollm import AudioLM, audio
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
    assert music.ndim == 1 and len(music) <= 0.4 * 24000 + 320
    clip = shared_data / "fsdd_spoken_digits" / "recordings" / "2_theo_5.wav"
    cont, _ = lm.continue_audio(clip, duration=0.2, seed=0)
    assert len(cont) > len(audio.load(clip, 24000)[0][0]) - 400


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
