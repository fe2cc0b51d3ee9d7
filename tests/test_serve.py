"""`audiollm serve`: the real server on a free loopback port, driven by the `openai` client and raw HTTP.

Clips are made here (tones and noise); results are compared with each other and with the library, never
with fixed outputs of the shipped model. An "endless" copy of the model (its `<eos>` logit at -inf) makes
clips that always run to their length, for the streaming, disconnect, queue and timeout cases.
"""

import copy
import io
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx
import numpy as np
import pytest
import soundfile as sf
import torch

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")
pytest.importorskip("prometheus_client")

from audiollm import tasks  # noqa: E402
from audiollm.api import AudioLM  # noqa: E402
from audiollm.cli import build_parser  # noqa: E402
from audiollm.generate import Sampling, generate  # noqa: E402
from audiollm.serve import ServeConfig, from_args  # noqa: E402
from audiollm.serve.app import BackgroundServer, create_app  # noqa: E402
from audiollm.serve.engine import Engine  # noqa: E402
from audiollm.serve.scheduler import Job, Scheduler  # noqa: E402
from audiollm.tasks import Template  # noqa: E402

GREEDY = {"temperature": 0}


def clip_bytes(seconds: float, seed: int, sample_rate: int = 16000, fmt: str = "WAV") -> bytes:
    """A tone in noise, different per seed, as file bytes."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    x = 0.2 * np.sin(2 * np.pi * (200 + 50 * seed) * t) + 0.05 * rng.standard_normal(len(t))
    buf = io.BytesIO()
    sf.write(buf, x.astype(np.float32), sample_rate, format=fmt)
    return buf.getvalue()


@pytest.fixture(scope="module")
def lm():
    return AudioLM.from_pretrained("tiny")


@pytest.fixture(scope="module")
def endless(lm):
    """The same weights, but `<eos>` is never chosen: every clip runs to its limit."""
    model, heads, eos = copy.copy(lm.model), lm.model.heads, lm.vocab.eos

    def no_eos(h, audio=True):
        text, codes = heads(h, audio)
        text[..., eos] = -1e9  # finite: guidance mixes it with itself
        return text, codes

    model.heads = no_eos
    return AudioLM(model, lm.tokenizer, lm.codec, lm.config, "tiny")


@contextmanager
def running(lm, **config):
    """A server for lm on a free loopback port; yields (base url, app)."""
    app = create_app(lm, ServeConfig(**config), "tiny")
    with BackgroundServer(app) as server:
        assert server.host == "127.0.0.1"
        yield server.url, app


@pytest.fixture(scope="module")
def voice_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("voice") / "ref.wav"
    path.write_bytes(clip_bytes(1.0, 7))
    return path


LIMITS = dict(max_batch=8, max_upload_mb=1, max_audio_seconds=20)


@pytest.fixture(scope="module")
def server(lm):
    """The shipped model as it is (transcription)."""
    with running(lm, **LIMITS) as s:
        yield s


@pytest.fixture(scope="module")
def speech_server(endless, voice_file):
    """The endless model with a named voice (speech, music, sfx: clips of known length)."""
    with running(endless, **LIMITS, voice=[f"ref={voice_file}"]) as s:
        yield s


def connect(url: str, key: str = "unused") -> "openai.OpenAI":
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def client(server):
    return connect(server[0])


@pytest.fixture(scope="module")
def speech(speech_server):
    return connect(speech_server[0])


def speak(client, text: str, **extra) -> bytes:
    body = {"max_seconds": 0.6} | extra
    fmt = body.pop("response_format", "wav")
    return client.audio.speech.create(
        model="tiny", input=text, voice=body.pop("voice", "default"), response_format=fmt, extra_body=body
    ).content


def metric(url: str, name: str) -> float:
    text = httpx.get(url + "/metrics").text
    found = re.search(rf"^{name} (\S+)$", text, re.M)
    assert found, f"{name} not in /metrics"
    return float(found.group(1))


# ---- the scheduler alone ---------------------------------------------------------------------------------
def test_scheduler_matches_generate_alone_and_in_a_batch(lm):
    """Greedy ASR, seeded TTS and guided music decoded by the scheduler, one at a time and all together,
    give exactly `generate`'s tokens."""
    v, pattern = lm.vocab, lm.pattern
    codes = [lm.codec.encode(torch.randn(1, 1, 4000 * (i + 1)) * 0.1)[0, : v.num_codebooks] for i in range(3)]
    asr = [tasks.asr(v, pattern, c, None).prompt() for c in codes]
    tts = tasks.tts(v, pattern, lm.tokenizer.encode("one two"), None, None).prompt()
    cond = tasks.captioned(v, pattern, "music", lm.tokenizer.encode("calm piano"), None).prompt()
    uncond = tasks.captioned(v, pattern, "music", [], None).prompt()

    def reference(prompt, start, sampling, seed=None, **kw):
        g = torch.Generator().manual_seed(seed) if seed is not None else None
        out = generate(lm.model, [prompt], template=Template(start=start), sampling=sampling,
                       max_new_tokens=16, pattern=pattern, generator=g, **kw)  # fmt: skip
        return out.row_text(0), out.audio[0, : int(out.lengths[0])][out.is_audio[0, : int(out.lengths[0])]]

    def jobs():
        return [Job(p, start_audio=False, max_new=16) for p in asr] + [
            Job(tts, start_audio=True, max_new=16, sampling=Sampling(1.0, 50), seed=5),
            Job(cond, start_audio=True, max_new=16, min_new=16, uncond=uncond, guidance=3.0),
        ]

    want = [reference(p, "text", Sampling(0.0)) for p in asr]
    want += [reference(tts, "audio", Sampling(1.0, 50), seed=5)]
    want += [reference(cond, "audio", Sampling(0.0), uncond=[uncond], min_new_tokens=16)]
    scheduler = Scheduler(lm.model, pattern, lm.max_len, max_batch=4)

    def run(batch):
        scheduler.submit(batch)
        while scheduler.waiting or scheduler.running:
            scheduler.step()
        return [(j.text, j.audio_steps()) for j in batch]

    alone = [run([j])[0] for j in jobs()]
    together = run(jobs())
    assert scheduler.peak_batch == 4  # five jobs, a batch of at most four: one joined when one left
    for (wt, wa), (at, aa), (bt, ba) in zip(want, alone, together, strict=True):
        assert at == bt == [t for t in wt if t != v.eos]
        assert torch.equal(aa.reshape(-1, v.num_codebooks), wa) and torch.equal(
            ba.reshape(-1, v.num_codebooks), wa
        )


# ---- endpoints -------------------------------------------------------------------------------------------
def test_scheduler_writes_the_pattern_tail_after_eos_as_generate_does(lm):
    """A model that wants `<eos>` at every step, held back for 4 steps: both decoders then write the delay
    tail (K-1 steps, codebook 0 empty) and end with whole frames."""
    model, heads, v = copy.copy(lm.model), lm.model.heads, lm.vocab

    def eager(h, audio=True):
        text, codes = heads(h, audio)
        text[..., v.eos] = 1e9
        return text, codes

    model.heads = eager
    prompt = tasks.tts(v, lm.pattern, lm.tokenizer.encode("one two"), None, None).prompt()
    out = generate(model, [prompt], template=Template(start="audio"), sampling=Sampling(0.0),
                   max_new_tokens=32, min_new_tokens=4, pattern=lm.pattern)  # fmt: skip
    K, n = v.num_codebooks, int(out.lengths[0])
    want = out.audio[0, :n]
    assert n == 4 + K - 1 and out.is_audio[0, :n].all() and (want[4:, 0] == v.empty_code).all()
    assert out.row_audio(0).shape == (K, 4)
    scheduler = Scheduler(model, lm.pattern, lm.max_len, max_batch=2)
    job = Job(prompt, start_audio=True, max_new=32, min_new=4)
    scheduler.submit([job])
    while scheduler.waiting or scheduler.running:
        scheduler.step()
    assert torch.equal(job.audio_steps(), want)


def test_models_health_and_metrics(server, client):
    url, _ = server
    assert [m.id for m in client.models.list()] == ["tiny"]
    assert client.models.retrieve("tiny").id == "tiny"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("whisper-1")
    health = httpx.get(url + "/health").json()
    assert health["status"] == "ok" and health["model"] == "tiny" and health["max_batch"] == 8
    text = httpx.get(url + "/metrics").text
    for name in ("audiollm_queue_length", "audiollm_running_batch_size", "audiollm_tokens_per_second",
                 "audiollm_request_latency_seconds", "audiollm_generated_tokens_total"):  # fmt: skip
        assert f"# TYPE {name.removesuffix('_total')}" in text


def test_transcription_json_and_text_equal_the_library(server, client, lm):
    data = clip_bytes(1.2, 1)
    got = client.audio.transcriptions.create(model="tiny", file=("a.wav", data))
    assert got.text == lm.transcribe((sf.read(io.BytesIO(data))[0], 16000))
    as_text = client.audio.transcriptions.create(model="tiny", file=("a.wav", data), response_format="text")
    assert as_text.strip() == got.text
    flac = client.audio.transcriptions.create(model="tiny", file=("a.flac", clip_bytes(1.2, 1, fmt="FLAC")))
    assert flac.text == got.text  # lossless upload, same audio


def test_concurrent_transcriptions_equal_sequential(server, client):
    clips = [clip_bytes(0.3 + 0.1 * i, i) for i in range(6)]

    def one(data):
        return client.audio.transcriptions.create(model="tiny", file=("c.wav", data)).text

    alone = [one(c) for c in clips]
    with ThreadPoolExecutor(len(clips)) as pool:
        together = list(pool.map(one, clips))
    # Whether these overlap depends on timing: tiny's transcripts of noise end in a step or two, faster
    # than the next upload is encoded. Batching itself is pinned by test_scheduler_matches_generate_*.
    assert together == alone


def test_codec_workers_flag_reaches_the_pool(lm):
    """`audiollm serve --codec-workers 3` gives an engine whose pool runs 3 calls at once; 0 is refused,
    naming the flag; torch's threads split the cores between the workers and the scheduler thread."""
    config = from_args(build_parser().parse_args(["serve", "--codec-workers", "3"]))
    assert config.codec_workers == 3 and 1 <= ServeConfig().codec_workers <= 4
    with pytest.raises(ValueError, match="--codec-workers=0"):
        ServeConfig(codec_workers=0)
    assert config.torch_threads(16) == 4 and config.torch_threads(2) == 1
    engine = Engine(lm, config)
    try:
        meet = threading.Barrier(3, timeout=10)  # with fewer workers: BrokenBarrierError after 10 s
        list(engine.codec_pool.map(lambda _: meet.wait(), range(3)))
    finally:
        engine.stop()


class MeetingCodec:
    """lm's codec, but once `armed` each `encode` waits until `parties` of them are inside it at once: with
    fewer codec workers than parties the wait times out and the request fails."""

    def __init__(self, codec, parties: int):
        self.codec, self.meet = codec, threading.Barrier(parties, timeout=10)
        self.armed, self.threads = False, set()

    def __getattr__(self, name):
        return getattr(self.codec, name)

    def encode(self, wav: torch.Tensor, sample_rate: int | None = None) -> torch.Tensor:
        if self.armed:
            self.threads.add(threading.current_thread().name)
            self.meet.wait()
        return self.codec.encode(wav, sample_rate)


def test_concurrent_transcriptions_on_two_codec_workers_equal_sequential(lm):
    """Two codec workers encode uploads side by side (pairs of encodes meet inside the codec), and the
    greedy transcripts equal those of one request at a time."""
    codec = MeetingCodec(lm.codec, parties=2)
    clips = [clip_bytes(0.3 + 0.1 * i, i) for i in range(4)]
    with running(AudioLM(lm.model, lm.tokenizer, codec, lm.config, "tiny"), codec_workers=2) as (url, _):
        client = connect(url)

        def one(data):
            return client.audio.transcriptions.create(model="tiny", file=("c.wav", data), **GREEDY).text

        alone = [one(c) for c in clips]
        codec.armed = True
        with ThreadPoolExecutor(len(clips)) as pool:
            together = list(pool.map(one, clips))
    assert together == alone
    assert len(codec.threads) == 2  # both workers encoded


def test_speech_formats(speech):
    wav = speak(speech, "one two", **GREEDY)
    audio, sr = sf.read(io.BytesIO(wav), dtype="int16")
    assert sr == 16000 and len(audio) == 0.6 * sr  # max_seconds of whole 20 ms frames
    pcm = speak(speech, "one two", response_format="pcm", **GREEDY)
    assert pcm == audio.tobytes()
    flac, _ = sf.read(io.BytesIO(speak(speech, "one two", response_format="flac", **GREEDY)), dtype="int16")
    assert np.array_equal(flac, audio)
    assert speak(speech, "one two", voice="ref", seed=3) == speak(speech, "one two", voice="ref", seed=3)
    assert speak(speech, "one two", voice={"id": "ref"}, seed=3) == speak(
        speech, "one two", voice="ref", seed=3
    )


def test_concurrent_speech_and_music_equal_sequential(speech_server, speech):
    url, _ = speech_server
    client = speech
    texts = ["one two", "three", "seven eight nine"]
    requests = [dict(text=t, **GREEDY) for t in texts] + [dict(text=t, seed=i) for i, t in enumerate(texts)]

    def music(caption):
        body = {"model": "tiny", "caption": caption, "duration": 0.4, "seed": 1, "response_format": "pcm"}
        r = httpx.post(url + "/v1/audio/music", json=body, timeout=60)
        assert r.status_code == 200, r.text
        return r.content

    def one(i):
        return speak(client, **requests[i]) if i < len(requests) else music(f"calm piano {i}")

    jobs = range(len(requests) + 2)
    alone = [one(i) for i in jobs]
    with ThreadPoolExecutor(len(jobs)) as pool:
        together = list(pool.map(one, jobs))
    assert together == alone
    assert all(len(m) == 0.4 * 16000 * 2 for m in alone[-2:])  # music lasts exactly its duration
    sfx = httpx.post(
        url + "/v1/audio/sfx", json={"model": "tiny", "input": "rain", "duration": 0.3}, timeout=60
    )
    assert sfx.status_code == 200 and sf.info(io.BytesIO(sfx.content)).duration == pytest.approx(0.3)


def test_bad_requests_are_4xx_naming_the_problem(server, client, speech):
    url, _ = server

    def post(path, **kw):
        return httpx.post(url + path, timeout=30, **kw)

    def message(r):
        return r.json()["error"]["message"]

    asr = "/v1/audio/transcriptions"
    r = post(asr, files={"file": ("bad.wav", b"RIFF not really audio")}, data={"model": "tiny"})
    assert r.status_code == 400 and message(r).startswith("bad.wav: unreadable or corrupt audio")
    r = post(asr, files={"file": ("empty.wav", b"")}, data={"model": "tiny"})
    assert r.status_code == 400 and "empty" in message(r)
    r = post(asr, files={"file": ("long.wav", clip_bytes(25, 0, sample_rate=8000))}, data={"model": "tiny"})
    assert r.status_code == 413 and "limit is 20 s" in message(r)
    r = post(asr, files={"file": ("big.wav", b"\0" * (2 << 20))}, data={"model": "tiny"})
    assert r.status_code == 413 and "MiB" in message(r)

    def chunked():  # 2.5 MiB of a file part with no Content-Length: counted as it arrives
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.wav"\r\n\r\n'
        yield from (b"\0" * (1 << 16) for _ in range(40))

    r = post(asr, content=chunked(), headers={"content-type": "multipart/form-data; boundary=b"})
    assert r.status_code == 413 and "MiB" in message(r)
    r = post(
        asr, files={"file": ("a.wav", clip_bytes(0.3, 0))}, data={"model": "tiny", "response_format": "srt"}
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "response_format"
    with pytest.raises(openai.NotFoundError, match="model 'whisper-1' not found"):
        client.audio.transcriptions.create(model="whisper-1", file=("a.wav", clip_bytes(0.3, 0)))
    with pytest.raises(openai.NotFoundError, match="voice 'alloy' not found"):
        speak(speech, "hi", voice="alloy")
    with pytest.raises(openai.BadRequestError, match="input is empty"):
        speak(speech, "   ")
    with pytest.raises(openai.BadRequestError, match="response_format"):
        speak(speech, "hi", response_format="mp3")
    with pytest.raises(openai.BadRequestError, match="cannot stream"):
        speak(speech, "hi", response_format="flac", stream=True)
    with pytest.raises(openai.BadRequestError, match="speed"):
        speak(speech, "hi", speed=2.0)
    r = post("/v1/audio/speech", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400
    r = post("/v1/audio/music", json={"model": "tiny", "input": "x", "duration": 99})
    assert r.status_code == 400 and r.json()["error"]["param"] == "duration"
    assert httpx.get(url + "/health").json()["status"] == "ok"


def test_api_key(lm):
    with running(lm, api_key="secret", max_batch=2) as (url, _):
        assert httpx.get(url + "/health").status_code == 200  # health checks need no key
        assert httpx.get(url + "/v1/models").status_code == 401
        with pytest.raises(openai.AuthenticationError):
            connect(url, "wrong").models.list()
        assert [m.id for m in connect(url, "secret").models.list()] == ["tiny"]


# ---- streaming, disconnects, the queue bound and the timeout ------------------------------------------------
def test_streamed_speech_sends_audio_before_the_clip_is_done(endless):
    with running(endless, max_batch=2) as (url, _):
        client = connect(url)
        started, chunks, busy_at_first = time.monotonic(), [], None
        body = {"stream": True, "max_seconds": 3.0, **GREEDY}
        with client.audio.speech.with_streaming_response.create(
            model="tiny", input="one two", voice="default", response_format="wav", extra_body=body
        ) as response:
            for chunk in response.iter_bytes():
                if not chunks:
                    first = time.monotonic() - started
                    busy_at_first = httpx.get(url + "/health").json()["running"]
                chunks.append(chunk)
        total = time.monotonic() - started
        stream = b"".join(chunks)
        assert busy_at_first == 1, "the first bytes left while the clip was still being generated"
        assert first < total / 2
        assert stream[:4] == b"RIFF" and len(stream) == 44 + 3 * 16000 * 2  # the whole clip, then the end
        whole = speak(client, "one two", max_seconds=3.0, response_format="pcm", **GREEDY)
        a, b = (np.frombuffer(x, "<i2").astype(np.float32) for x in (stream[44:], whole))
        # windowed decoding ~ decoding the whole clip at once (0.98 with the istft codec: its ConvNeXt
        # context reaches past a window's edge)
        assert np.corrcoef(a, b)[0, 1] > 0.95


def test_disconnect_mid_stream_frees_the_slot(endless):
    with running(endless, max_batch=1) as (url, _):
        body = {"model": "tiny", "input": "one", "voice": "default", "stream": True, "response_format": "pcm",
                "max_seconds": 10.0}  # fmt: skip
        with httpx.stream("POST", url + "/v1/audio/speech", json=body, timeout=30) as r:
            assert r.status_code == 200
            next(r.iter_bytes())
        gone = time.monotonic()
        while httpx.get(url + "/health").json()["running"] and time.monotonic() - gone < 30:
            time.sleep(0.02)
        freed = time.monotonic() - gone
        # cancelled, not run to its end (~500 steps); on an idle machine the slot is free within ~0.1 s
        assert metric(url, "audiollm_cancelled_requests_total") == 1 and freed < 10
        client = connect(url)
        assert len(speak(client, "two", max_seconds=0.2)) > 44  # the freed slot serves the next request


def test_queue_full_is_429_with_retry_after(endless):
    with running(endless, max_batch=1, max_queue=1) as (url, _):
        body = {
            "model": "tiny",
            "input": "one",
            "voice": "default",
            "max_seconds": 10.0,
            "response_format": "pcm",
        }
        with httpx.stream("POST", url + "/v1/audio/speech", json=body | {"stream": True}, timeout=30) as r:
            chunks = r.iter_bytes()  # held: a dropped iterator would close the response
            next(chunks)  # running
            waiting = threading.Thread(target=httpx.post, args=(url + "/v1/audio/speech",),
                                       kwargs={"json": body | {"max_seconds": 0.2}, "timeout": 30})  # fmt: skip
            waiting.start()
            deadline = time.monotonic() + 10
            while httpx.get(url + "/health").json()["queue_length"] < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            full = httpx.post(url + "/v1/audio/speech", json=body, timeout=30)
            assert full.status_code == 429 and int(full.headers["Retry-After"]) >= 1
            assert "queue is full" in full.json()["error"]["message"]
        waiting.join(timeout=30)
        assert not waiting.is_alive()


def test_request_timeout(endless):
    with running(endless, max_batch=1, timeout=0.5) as (url, _):
        r = httpx.post(url + "/v1/audio/speech", timeout=30,
                       json={"model": "tiny", "input": "one", "voice": "default", "max_seconds": 20.0})  # fmt: skip
        assert r.status_code == 504 and "timeout" in r.json()["error"]["message"]
        deadline = time.monotonic() + 2
        while httpx.get(url + "/health").json()["running"] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert httpx.get(url + "/health").json()["running"] == 0


def test_mixed_load_with_bad_uploads_stays_up(server):
    url, _ = server
    bad = [b"", b"garbage", b"RIFF\x00\x00\x00\x00WAVEfmt ", clip_bytes(25, 1, sample_rate=8000)]
    good = [clip_bytes(0.3, i) for i in range(3)]

    def one(i):
        data, ok = (good[i % 3], True) if i % 2 else (bad[i % 4], False)
        r = httpx.post(url + "/v1/audio/transcriptions", files={"file": ("x.wav", data)},
                       data={"model": "tiny" if i % 5 else "nope"}, timeout=60)  # fmt: skip
        return r.status_code, ok and i % 5 != 0

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(30)))
    for status, ok in results:
        assert (status == 200) if ok else (400 <= status < 500), results
    health = httpx.get(url + "/health").json()
    assert health["status"] == "ok" and health["queue_length"] == health["running"] == 0


@pytest.mark.slow
def test_cli_serve_binds_loopback(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "audiollm.cli", "serve", "--port", str(port), "--max-batch", "2"]
    with open(tmp_path / "serve.log", "wb") as log:  # a file, not a pipe: a full pipe would stall the server
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 300
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200:
                        break
                except httpx.TransportError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        proc.kill()
                        pytest.fail(
                            f"`audiollm serve` did not come up:\n{(tmp_path / 'serve.log').read_text()}"
                        )
                    time.sleep(0.2)
            assert [m.id for m in connect(f"http://127.0.0.1:{port}").models.list()] == ["tiny"]
        finally:
            proc.terminate()
            proc.wait(timeout=60)
