"""The audiollm demo: one Gradio app, a tab per task, each tab's function also an API endpoint.

    audiollm demo --model runs/quickstart/model      # or: python demos/app.py --model ...

Endpoints for `gradio_client` and scripts: /transcribe, /speak, /music, /sfx, /compose. Gradio is
imported here and nowhere in `audiollm`; the `audiollm demo` command loads this module lazily.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import sys
import tempfile
from collections.abc import Callable
from importlib import import_module
from pathlib import Path

import gradio as gr
import numpy as np
from PIL import Image

from audiollm import audio
from audiollm.api import AudioLM

composition = import_module("audiollm.compose")  # the package (`audiollm.compose` is its function compose)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("AUDIOLLM_SHARED_DATA", REPO.parent / "shared" / "data"))
EXAMPLE_CLIPS = (  # under SHARED_DATA; those present prefill the Transcribe tab's examples
    "fsdd_spoken_digits/recordings/7_theo_49.wav",
    "english_speech_misc/jfk.flac",
    "ljspeech_subset/wavs/LJ001-0001.flac",
)
MAX_UPLOAD_SECONDS = 30.0  # longer uploads are refused with a message
MAX_FILE_SIZE = "10mb"  # Gradio refuses larger uploads before they reach a handler
CONCURRENCY = 1  # requests run at a time over all endpoints (one model, shared); the rest wait in the queue
MODEL = "model"  # the concurrency group every endpoint that runs the model belongs to
QUEUE_SIZE = 32  # waiting requests beyond this are told the queue is full
TEMP_FILE_SECONDS = 600  # Gradio's files (uploads, results) are deleted this old, and all of them at shutdown
MAX_COMPOSE_SECONDS = 60.0  # the longest composed track
MAX_COMPOSE_ELEMENTS = 16


def _readable(fn: Callable) -> Callable:
    """Expected failures (a corrupt upload, empty text, a task the model lacks) become a message shown in
    the page instead of a stack trace."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except audio.AudioError as e:  # name the upload, not Gradio's temporary path (nor in the problem)
            name = Path(e.path).name
            raise gr.Error(f"{name}: {e.problem.replace(e.path, name)}", print_exception=False) from None
        except (ValueError, OSError, RuntimeError) as e:
            raise gr.Error(_without_server_paths(str(e)), print_exception=False) from None

    return wrapper


def _without_server_paths(message: str) -> str:
    """`message` with every path under Gradio's upload folder or the temporary folder cut to its file name."""
    roots = {gr.utils.get_upload_folder(), tempfile.gettempdir(), str(Path(tempfile.gettempdir()).resolve())}
    for root in sorted(roots, key=len, reverse=True):
        message = re.sub(re.escape(root) + r"/(?:[^/\s'\"]+/)*", "", message)
    return message


def _upload(path: str | None, what: str) -> str:
    """An uploaded or recorded clip's path, checked: present, readable, at most MAX_UPLOAD_SECONDS long."""
    if not path:
        raise gr.Error(f"{what}: upload or record a clip first", print_exception=False)
    seconds = audio.info(path).duration
    if seconds > MAX_UPLOAD_SECONDS:
        raise gr.Error(
            f"{what} is {seconds:.1f} s long; this demo accepts clips up to {MAX_UPLOAD_SECONDS:.0f} s",
            print_exception=False,
        )
    return path


def _playable(wav: np.ndarray, sr: int) -> tuple[int, np.ndarray]:
    """(N,) or (C, N) float32 -> Gradio's (sample rate, (N,) or (N, C) int16) audio value, at its own level
    (Gradio would scale float audio to full scale)."""
    if wav.shape[-1] == 0:
        raise gr.Error("the model ended at once and made no audio; try another seed", print_exception=False)
    pcm = (np.clip(wav, -1.0, 1.0) * 32767).astype(np.int16)
    return sr, (pcm.T if pcm.ndim == 2 else pcm)  # (N,) or (N, C)


def _seed(seed: float | None) -> int | None:
    return None if seed is None else int(seed)


class Demo:
    """The functions behind the tabs, over one loaded model. Each is an API endpoint of the same name."""

    def __init__(self, lm: AudioLM):
        self.lm = lm

    def speculative(self, on: bool) -> str:
        """Switch speculative decoding (greedy output unchanged, sampling the same distribution) on or off."""
        self.lm.set_speculative(on)
        return "speculative decoding on: the model's first layers draft" if on else "plain decoding"

    @_readable
    def transcribe(self, clip: str | None) -> str:
        """Speech -> text. clip: path of an uploaded or recorded audio file."""
        return self.lm.transcribe(_upload(clip, "the clip"))

    @_readable
    def speak(
        self,
        text: str,
        voice: str | None = None,
        max_seconds: float = 10.0,
        seed: float | None = 0,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 (Gradio's way of asking for a progress bar)
    ) -> tuple[int, np.ndarray]:
        """Text -> speech, in the voice of the optional `voice` clip (path)."""
        voice = _upload(voice, "the voice prompt") if voice else None
        progress(0.0, desc=f"speaking (at most {max_seconds:.0f} s)")
        wav, sr = self.lm.synthesize(text, voice_prompt=voice, max_seconds=max_seconds, seed=_seed(seed))
        return _playable(wav, sr)

    @_readable
    def music(
        self,
        caption: str,
        duration: float = 8.0,
        guidance_scale: float = 3.0,
        seed: float | None = 0,
        progress: gr.Progress = gr.Progress(),  # noqa: B008
    ) -> tuple[int, np.ndarray]:
        """Caption -> music of `duration` seconds."""
        progress(0.0, desc=f"making {duration:.0f} s of music")
        return _playable(*self.lm.generate_music(caption, duration, guidance_scale, _seed(seed)))

    @_readable
    def sfx(
        self,
        caption: str,
        duration: float = 4.0,
        guidance_scale: float = 3.0,
        seed: float | None = 0,
        progress: gr.Progress = gr.Progress(),  # noqa: B008
    ) -> tuple[int, np.ndarray]:
        """Caption -> a sound effect of `duration` seconds."""
        progress(0.0, desc=f"making {duration:.0f} s of sound")
        return _playable(*self.lm.generate_sfx(caption, duration, guidance_scale, _seed(seed)))

    @_readable
    def compose(
        self,
        source: str = "script",
        prompt: str = "",
        script: str = "",
        seed: float | None = 0,
        progress: gr.Progress = gr.Progress(),  # noqa: B008
    ) -> tuple[tuple[int, np.ndarray], Image.Image, dict]:
        """A request (source="prompt") or a JSON script (source="script") -> the mixed track, the timeline
        picture and the resolved script (every element's start and end)."""
        if source == "prompt":
            if not prompt.strip():
                raise ValueError("the prompt is empty: describe the scene, or compose from the script")
            request = composition.plan(prompt)
        else:
            request = _script(script)
        if len(request.elements) > MAX_COMPOSE_ELEMENTS:
            raise ValueError(f"the script has {len(request.elements)} elements; this demo composes at most {MAX_COMPOSE_ELEMENTS}")  # fmt: skip
        progress(0.0, desc=f"composing {len(request.elements)} elements")
        piece = composition.compose(request, self.lm, _seed(seed), max_seconds=MAX_COMPOSE_SECONDS)
        with tempfile.TemporaryDirectory() as tmp, Image.open(piece.timeline(Path(tmp) / "t.png")) as png:
            picture = png.copy()
        return _playable(piece.audio, piece.sample_rate), picture, piece.script.to_dict()


def _script(text: str) -> composition.Script:
    """The editor's JSON script, parsed here so that no text is taken for a file name: the page must not
    reach the server's files. Voice prompts (recordings on the server) are refused for the same reason."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(
            f"the script is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})"
        ) from None
    if not isinstance(data, dict):
        raise ValueError(
            f'the script must be a JSON object such as {{"elements": [...]}}, got {type(data).__name__}'
        )
    voices = data.get("voices")
    if isinstance(voices, dict) and any(isinstance(v, dict) and "prompt" in v for v in voices.values()):
        raise ValueError(
            "voice prompts are files on the server, which the demo does not read: remove 'prompt' from "
            "the voices, or run `audiollm compose` on your own machine"
        )
    return composition.load_script(data)


def model_card(lm: AudioLM) -> str:
    """Markdown about the model: `MODEL_CARD.md` from its directory when there is one, else a summary of
    its config.json (tasks, size, codec)."""
    if lm.directory is not None and (lm.directory / "MODEL_CARD.md").is_file():
        return (lm.directory / "MODEL_CARD.md").read_text()
    m, codec = lm.checkpoint.model, lm.checkpoint.codec
    return "\n".join(
        [
            f"## {lm.name or 'model'}",
            "",
            f"- trained for: {', '.join(lm.tasks)}",
            f"- transformer: {m.n_layer} layers, {m.n_head} heads, width {m.d_model}, "
            f"{lm.model.num_params() / 1e6:.2f} M parameters",
            f"- codec: {codec.codec if codec else None} ({lm.vocab.num_codebooks} codebooks, {lm.codec.frame_rate} "
            f"frames/s, {lm.codec.sample_rate} Hz)",
            f"- codebook pattern: {lm.pattern}; context: {lm.max_len} positions",
            "",
            "This model directory has no MODEL_CARD.md, so there are no evaluation numbers to show.",
        ]
    )


def _missing(lm: AudioLM, *needed: str) -> None:
    """A note at the top of a tab whose task(s) the model was not trained for."""
    lacking = [t for t in needed if t not in lm.tasks]
    if lacking:
        gr.Markdown(f"**This model was not trained for {', '.join(lacking)}**; requests will be refused.")


def _transcribe_tab(demo: Demo, examples: list[Path]) -> None:
    _missing(demo.lm, "asr")
    clip = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Speech")
    button = gr.Button("Transcribe", variant="primary")
    text = gr.Textbox(label="Transcript", elem_id="transcript", interactive=False)
    status = gr.Markdown(elem_id="transcript-status")
    if examples:
        gr.Examples([[str(p)] for p in examples], inputs=clip, api_visibility="private")
        # Gradio files the examples' copies as ordinary temporary files, so delete_cache would remove them
        # after TEMP_FILE_SECONDS, and any demo's shutdown would remove them from every other demo using
        # the same cache (copies are named by content): keep them, as Gradio keeps components' defaults.
        clip.keep_in_cache.update(clip.move_resource_to_block_cache(str(p)) for p in examples)
    done = button.click(demo.transcribe, clip, text, api_name="transcribe", concurrency_id=MODEL)
    done.success(_describe_transcript, [clip, text], status, api_visibility="private")


def _describe_transcript(clip: str, text: str) -> str:
    """One line under the transcript, so an empty one reads as "nothing recognised", not as "not run"."""
    words = len(text.split())
    return f"{audio.info(clip).duration:.1f} s of audio: " + (
        f"{words} words" if words else "no words recognised"
    )


def _speak_tab(demo: Demo) -> None:
    _missing(demo.lm, "tts")
    text = gr.Textbox(label="Text", placeholder="What should be said?")
    voice = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Voice prompt (optional)")
    with gr.Row():
        max_seconds = gr.Slider(1, 20, value=10, step=1, label="Longest speech (s)")
        seed = gr.Number(0, precision=0, label="Seed")
    button = gr.Button("Speak", variant="primary")
    speech = gr.Audio(label="Speech", type="numpy", interactive=False)
    button.click(demo.speak, [text, voice, max_seconds, seed], speech, api_name="speak", concurrency_id=MODEL)


def _music_tab(demo: Demo) -> None:
    _missing(demo.lm, "music", "sfx")
    caption = gr.Textbox(label="Caption", placeholder="calm piano, slow / a dog barks twice")
    with gr.Row():
        duration = gr.Slider(0.5, 30, value=8, step=0.5, label="Duration (s)")
        guidance = gr.Slider(1, 10, value=3, step=0.5, label="Guidance scale")
        seed = gr.Number(0, precision=0, label="Seed")
    with gr.Row():
        music = gr.Button("Make music", variant="primary")
        sfx = gr.Button("Make a sound effect", variant="primary")
    out = gr.Audio(label="Audio", type="numpy", interactive=False)
    music.click(demo.music, [caption, duration, guidance, seed], out, api_name="music", concurrency_id=MODEL)
    sfx.click(demo.sfx, [caption, duration, guidance, seed], out, api_name="sfx", concurrency_id=MODEL)


def _compose_tab(demo: Demo) -> None:
    _missing(demo.lm, "tts", "music", "sfx")
    source = gr.Radio(["prompt", "script"], value="script", label="Compose from")
    prompt = gr.Textbox(label="Prompt", placeholder="a news intro with calm music and a door bell")
    script = gr.Code(json.dumps(composition.EXAMPLE_SCRIPT, indent=2), language="json", label="Script (JSON)")
    seed = gr.Number(0, precision=0, label="Seed")
    button = gr.Button("Compose", variant="primary")
    track = gr.Audio(label="Mixed track", type="numpy", interactive=False)
    timeline = gr.Image(label="Timeline", type="pil", interactive=False)
    resolved = gr.JSON(label="Resolved script")
    button.click(
        demo.compose, [source, prompt, script, seed], [track, timeline, resolved], api_name="compose",
        concurrency_id=MODEL,
    )  # fmt: skip


def build_app(model: AudioLM | str | Path = "tiny", device: str | None = None) -> gr.Blocks:
    """The demo's Blocks over an already-loaded AudioLM, or a shipped model name / checkpoint directory."""
    lm = model if isinstance(model, AudioLM) else load_model(model, device)
    demo = Demo(lm)
    examples = [SHARED_DATA / p for p in EXAMPLE_CLIPS if (SHARED_DATA / p).is_file()]
    temp_files = (TEMP_FILE_SECONDS, TEMP_FILE_SECONDS)  # (how often, how old), seconds; all at shutdown
    with gr.Blocks(title="audiollm", analytics_enabled=False, delete_cache=temp_files) as app:
        gr.Markdown(f"# audiollm\nModel: `{lm.name or 'in memory'}`, trained for {', '.join(lm.tasks)}.")
        with gr.Row():
            fast = gr.Checkbox(False, label="Speculative decoding")
            mode = gr.Markdown("plain decoding")
        fast.change(demo.speculative, fast, mode, api_name="speculative", concurrency_id=MODEL)
        with gr.Tab("Transcribe"):
            _transcribe_tab(demo, examples)
        with gr.Tab("Speak"):
            _speak_tab(demo)
        with gr.Tab("Music and Sound"):
            _music_tab(demo)
        with gr.Tab("Compose"):
            _compose_tab(demo)
        with gr.Tab("About"):
            gr.Markdown(model_card(lm))
    return app


def load_model(name_or_dir: str | Path, device: str | None = None) -> AudioLM:
    """AudioLM.from_pretrained, with a missing model's error saying how to point the demo at one."""
    try:
        return AudioLM.from_pretrained(name_or_dir, device=device)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{e}; or run the demo on a trained checkpoint: --model DIR") from None


def serve(
    model: AudioLM | str | Path = "tiny",
    host: str = "127.0.0.1",
    port: int = 7860,
    share: bool = False,
    device: str | None = None,
    block: bool = True,
) -> gr.Blocks:
    """Build the app, queue it (CONCURRENCY at a time over all endpoints) and launch it on host:port. block=False returns at
    once with the server running in a thread (stop it with `app.close()`); its address is `app.local_url`."""
    app = build_app(model, device)
    app.queue(default_concurrency_limit=CONCURRENCY, max_size=QUEUE_SIZE)
    app.launch(
        server_name=host,
        server_port=port,
        share=share,
        show_error=True,
        max_file_size=MAX_FILE_SIZE,
        prevent_thread_lock=not block,
        quiet=not block,
    )
    return app


def main(argv: list[str] | None = None) -> int:
    """`python demos/app.py [--model M] ...`: `serve` with the options of `audiollm demo` (this leaf does not
    import the CLI); an option left out takes `serve`'s default, an expected failure is one line on stderr."""
    parser = argparse.ArgumentParser(
        description="Launch the audiollm Gradio demo.", argument_default=argparse.SUPPRESS
    )
    parser.add_argument(
        "--model", help="shipped model name or a trained checkpoint directory (default: tiny)"
    )
    parser.add_argument("--device", help="torch device (default: cuda when present, else cpu)")
    parser.add_argument("--host", help="address to bind (0.0.0.0 serves the network)")
    parser.add_argument("--port", type=int, help="port to listen on")
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    try:
        serve(**vars(parser.parse_args(argv)))
    except (ValueError, RuntimeError, OSError) as e:
        parser.exit(1, f"{parser.prog}: error: {e}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
