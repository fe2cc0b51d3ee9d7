"""The Gradio demo (demos/app.py): every endpoint through gradio_client against the app running on a free
loopback port, readable errors, the About tab, `audiollm demo` without a model, and a headless Chromium
session that transcribes an example in the page."""

import contextlib
import json
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from audiollm import AudioLM, audio
from demos import app as demo_app

CHROMIUM = Path("/usr/bin/chromium")  # Debian's `chromium` package (`make setup` installs it)
EXAMPLE = "fsdd_spoken_digits/recordings/7_theo_49.wav"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(lm, tmp_path_factory):
    """The demo over the digits model, launched on a free 127.0.0.1 port in a background thread."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AUDIOLLM_CACHE", str(tmp_path_factory.mktemp("cache")))  # composition's clip cache
        mp.setenv("GRADIO_TEMP_DIR", str(tmp_path_factory.mktemp("gradio")))  # not another run's files
        app = demo_app.serve(lm, port=free_port(), block=False)
        yield app
        app.close()


@pytest.fixture(scope="module")
def client(served):
    return Client(served.local_url, verbose=False)


def read(path: str) -> tuple[np.ndarray, int]:
    wav, sr = sf.read(path, dtype="float32")
    return wav, sr


def seeds(make: Callable[[int], tuple[np.ndarray, int]]) -> dict[bool, int]:
    """The first seeds for which `make(seed)` (a call to the barely trained digits model) returns some audio
    (True) or none, the model having stopped at once (False)."""
    found: dict[bool, int] = {}
    for seed in range(32):
        found.setdefault(len(make(seed)[0]) > 0, seed)
        if len(found) == 2:
            break
    return found


@pytest.mark.slow
def test_transcribe_endpoint_runs_the_model(client, lm, shared_data):
    clip = shared_data / EXAMPLE
    assert client.predict(handle_file(str(clip)), api_name="/transcribe") == lm.transcribe(clip)


@pytest.mark.slow
def test_speak_music_and_sfx_endpoints_return_the_models_audio(client, lm, shared_data):
    prompt = shared_data / "fsdd_spoken_digits" / "recordings" / "1_nicolas_3.wav"
    seed = seeds(lambda s: lm.synthesize("seven", voice_prompt=prompt, max_seconds=1, seed=s))[True]
    wav, sr = read(client.predict("seven", handle_file(str(prompt)), 1, seed, api_name="/speak"))
    direct, direct_sr = lm.synthesize("seven", voice_prompt=prompt, max_seconds=1, seed=seed)
    assert (sr, len(wav)) == (direct_sr, len(direct)) and len(wav) > 0
    for name, make in (("/music", lm.generate_music), ("/sfx", lm.generate_sfx)):
        seed = seeds(lambda s, make=make: make("a voice says two", 0.5, 3.0, s))[True]
        wav, sr = read(client.predict("a voice says two", 0.5, 3.0, seed, api_name=name))
        direct, direct_sr = make("a voice says two", 0.5, 3.0, seed)
        assert (sr, len(wav)) == (direct_sr, len(direct)) and len(wav) > 0
        np.testing.assert_allclose(wav, direct, atol=2 / 2**15)  # Gradio sends 16-bit PCM


@pytest.mark.slow
def test_errors_are_readable_messages(client, lm, tmp_path):
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" * 10)
    long = tmp_path / "long.wav"
    sf.write(long, np.zeros(8000 * 31, np.float32), 8000)
    cases = [
        (("/transcribe", handle_file(str(corrupt))), "corrupt.wav: unreadable or corrupt audio"),
        (("/transcribe", handle_file(str(long))), "31.0 s long; this demo accepts clips up to 30 s"),
        (("/speak", "   ", None, 1, 0), "text is empty"),
        (
            (
                "/speak",
                "seven",
                None,
                1,
                seeds(lambda s: lm.synthesize("seven", max_seconds=1, seed=s))[False],
            ),
            "the model ended at once",
        ),
        (("/music", "", 1.0, 3.0, 0), "caption is empty"),
    ]
    for (endpoint, *args), message in cases:
        with pytest.raises(AppError) as info:
            client.predict(*args, api_name=endpoint)
        assert message in str(info.value) and "Traceback" not in str(info.value)
        assert "/" not in str(info.value), f"no server path in the message: {info.value}"


SCRIPT = {
    "sample_rate": 24000,
    "elements": [
        {"type": "music", "description": "a voice says two", "layout": "background", "start": 0.0,
         "end": "end", "volume_db": -30},
        {"type": "speech", "text": "seven", "layout": "foreground"},
        {"type": "sfx", "description": "a voice says one", "layout": "foreground", "duration": 0.3, "gap": 0.1},
    ],
}  # fmt: skip


@pytest.mark.slow
def test_compose_endpoint_mixes_a_script(client, lm, tmp_path):
    track, timeline, resolved = client.predict("script", "", json.dumps(SCRIPT), 0, api_name="/compose")
    direct = demo_app.composition.compose(SCRIPT, lm, 0, cache_dir=tmp_path)
    assert resolved == json.loads(json.dumps(direct.script.to_dict()))
    wav, sr = read(track)
    assert (sr, len(wav)) == (direct.sample_rate, direct.audio.shape[-1])
    assert Path(timeline).stat().st_size > 0
    errors = [
        (("prompt", "  ", "", 0), "the prompt is empty"),
        (("script", "", "{not json", 0), "not valid JSON"),
        (("script", "", str(Path(__file__)), 0), "not valid JSON"),  # text, never a server file name
        (
            ("script", "", json.dumps(SCRIPT | {"voices": {"v": {"prompt": "/nonexistent.wav"}}}), 0),
            "voice prompts",
        ),
        (
            ("script", "", json.dumps(SCRIPT | {"elements": SCRIPT["elements"][1:] * 9}), 0),
            "the script has 18 elements; this demo composes at most 16",
        ),
        (
            ("script", "", json.dumps(SCRIPT | {"elements": [SCRIPT["elements"][2] | {"duration": 100}]}), 0),
            "the track would last 100.1 s; the limit is 60 s",
        ),
    ]
    for args, message in errors:
        with pytest.raises(AppError, match=message):
            client.predict(*args, api_name="/compose")


def test_a_task_the_model_lacks_is_refused_with_a_message(lm):
    import gradio as gr

    asr_only = demo_app.Demo(AudioLM(lm.model, lm.tokenizer, lm.codec, lm.config | {"tasks": ["asr"]}))
    with pytest.raises(gr.Error, match="not trained for music"):
        asr_only.music("a voice says two", 0.5, 3.0, 0)
    with pytest.raises(gr.Error, match="not trained for tts"):
        asr_only.speak("seven")


def test_about_shows_the_model_card_or_a_config_summary(lm, tmp_path):
    summary = demo_app.model_card(lm)
    assert f"trained for: {', '.join(lm.tasks)}" in summary and "encodec_24khz" in summary
    (tmp_path / "MODEL_CARD.md").write_text("# tiny\n\nWER 0.42 on digits\n")
    named = AudioLM(lm.model, lm.tokenizer, lm.codec, lm.config, name=str(tmp_path), directory=tmp_path)
    assert demo_app.model_card(named) == "# tiny\n\nWER 0.42 on digits\n"


def test_cli_demo_says_how_to_pick_a_model(tmp_path, capsys):
    from audiollm.cli import main

    assert main(["demo", "--model", str(tmp_path / "missing")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("audiollm demo: error:") and "--model DIR" in err and err.count("\n") == 1


@pytest.mark.slow
@pytest.mark.skipif(
    not CHROMIUM.is_file(), reason=f"{CHROMIUM} missing: apt-get install chromium (make setup)"
)
def test_browser_transcribes_an_example(served, lm, shared_data, tmp_path):
    """Headless Chromium opens the page, picks the first example, presses Transcribe, reads the text;
    another demo on the same Gradio cache has started and shut down first (and deleted its files)."""
    from playwright.sync_api import expect, sync_playwright

    demo_app.serve(lm, port=free_port(), block=False).close()
    expected = lm.transcribe(shared_data / EXAMPLE)  # "" from the digits model: the status line says so
    words = f"{len(expected.split())} words" if expected else "no words recognised"
    seconds = audio.info(shared_data / EXAMPLE).duration
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            page = browser.new_page()
            page.goto(served.local_url)
            page.get_by_text(Path(EXAMPLE).name).first.click()
            page.get_by_role("button", name="Transcribe", exact=True).click()
            status = page.locator("#transcript-status")
            expect(status).to_contain_text(f"{seconds:.1f} s of audio: {words}", timeout=60_000)
            expect(page.locator("#transcript textarea")).to_have_value(expected)
            page.screenshot(path=str(tmp_path / "demo.png"), full_page=True)
        finally:
            browser.close()
    assert (tmp_path / "demo.png").stat().st_size > 0


def test_every_model_endpoint_waits_in_one_queue(lm):
    """One concurrency group for all endpoints: a music request waits while a transcription runs."""
    app = demo_app.build_app(lm)
    app.queue(default_concurrency_limit=demo_app.CONCURRENCY)
    model_fns = {fn.api_name: fn for fn in app.fns.values() if fn.api_name in demo_app_endpoints()}
    assert set(model_fns) == set(demo_app_endpoints())
    assert {fn.concurrency_id for fn in model_fns.values()} == {demo_app.MODEL}
    assert {fn.concurrency_limit for fn in model_fns.values()} <= {1, "default"}


def demo_app_endpoints() -> tuple[str, ...]:
    return ("transcribe", "speak", "music", "sfx", "compose")


@pytest.mark.slow
def test_requests_to_different_endpoints_never_overlap(client, lm, shared_data, monkeypatch):
    running, most = [0], [0]
    lock = threading.Lock()
    for name in ("transcribe", "generate_music", "generate_sfx"):
        original = getattr(lm, name)

        def counted(*args, _original=original, **kwargs):
            with lock:
                running[0] += 1
                most[0] = max(most[0], running[0])
            try:
                return _original(*args, **kwargs)
            finally:
                with lock:
                    running[0] -= 1

        monkeypatch.setattr(lm, name, counted)
    clip = handle_file(str(shared_data / EXAMPLE))
    jobs = [client.submit(clip, api_name="/transcribe") for _ in range(2)]
    jobs += [
        client.submit("a voice says two", 0.5, 3.0, s, api_name=n) for s in (0, 1) for n in ("/music", "/sfx")
    ]
    for job in jobs:
        with contextlib.suppress(AppError):  # the barely trained model may make no audio; it still ran
            job.result()
    assert most[0] == 1, "one request at a time, whichever endpoint"


@pytest.mark.slow
def test_no_temporary_files_are_left_after_shutdown(lm, shared_data, tmp_path, monkeypatch):
    temp = tmp_path / "gradio"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(temp))
    monkeypatch.setenv("AUDIOLLM_CACHE", str(tmp_path / "cache"))
    app = demo_app.serve(lm, port=free_port(), block=False)
    try:
        client = Client(app.local_url, verbose=False)
        client.predict(handle_file(str(shared_data / EXAMPLE)), api_name="/transcribe")
        seed = seeds(lambda s: lm.generate_sfx("a voice says two", 0.5, 3.0, s))[True]
        client.predict("a voice says two", 0.5, 3.0, seed, api_name="/sfx")
        assert [p for p in temp.rglob("*") if p.is_file()], "the requests made files"
    finally:
        app.close()
    kept = [p.name for p in temp.rglob("*") if p.is_file()]  # only the examples' copies, shared by demos
    assert sorted(kept) == sorted(Path(p).name for p in demo_app.EXAMPLE_CLIPS)


@pytest.mark.slow
def test_examples_outlive_the_temporary_file_schedule(lm, shared_data, tmp_path, monkeypatch):
    """delete_cache removes an upload once it is TEMP_FILE_SECONDS old, but never the examples' copies."""
    temp = tmp_path / "gradio"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(temp))
    monkeypatch.setattr(demo_app, "TEMP_FILE_SECONDS", 1)
    app = demo_app.serve(lm, port=free_port(), block=False)
    try:
        clip = shared_data / "fsdd_spoken_digits" / "recordings" / "1_nicolas_3.wav"  # not an example
        Client(app.local_url, verbose=False).predict(handle_file(str(clip)), api_name="/transcribe")
        for _ in range(600):  # the schedule runs every second; 60 s at most
            if not list(temp.rglob(clip.name)):
                break
            threading.Event().wait(0.1)
        assert not list(temp.rglob(clip.name)), "the upload was deleted on schedule"
        kept = [p.name for p in temp.rglob("*") if p.is_file()]
        assert sorted(kept) == sorted(Path(p).name for p in demo_app.EXAMPLE_CLIPS)
    finally:
        app.close()
