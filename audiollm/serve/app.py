"""The HTTP server: OpenAI-compatible audio endpoints on FastAPI over a continuous-batching `Engine`.

    POST /v1/audio/transcriptions   multipart `file`, `model`; response_format json | text
    POST /v1/audio/speech           JSON model, input, voice; response_format wav | pcm | flac; stream
    POST /v1/audio/music            JSON model, input (caption), duration, guidance, seed; as speech
    POST /v1/audio/sfx              the same for sound effects
    GET  /health, /v1/models, /metrics (Prometheus text)

Errors are OpenAI-style JSON (`{"error": {"message", "type", "param", "code"}}`): 400 bad input (naming
the parameter or the problem with the audio), 401 missing API key, 404 unknown model or voice, 413 body
or audio too long, 429 queue full (with Retry-After), 504 timeout. A replica keeps no state between
requests, so several run behind any HTTP load balancer.
"""

from __future__ import annotations

import hmac
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Literal

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import AliasChoices, BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from audiollm.api import AudioLM
from audiollm.generate import Sampling
from audiollm.serve import formats
from audiollm.serve.config import ServeConfig
from audiollm.serve.engine import Engine, ServeError
from audiollm.serve.metrics import Metrics
from audiollm.threads import set_threads

ERROR_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
    413: "request_too_large", 429: "rate_limit_error", 499: "client_closed_request", 504: "timeout_error",
}  # fmt: skip
ENDPOINTS = (
    "/v1/audio/transcriptions", "/v1/audio/speech", "/v1/audio/music", "/v1/audio/sfx",
    "/v1/models", "/health", "/metrics",
)  # fmt: skip


class _Audio(BaseModel):
    """Fields every audio-generating endpoint takes."""

    model_config = ConfigDict(extra="forbid")
    model: str
    input: str
    response_format: Literal["wav", "pcm", "flac"] = "wav"
    stream: bool = False  # send the audio in chunks as it is decoded (wav or pcm)
    temperature: float = Field(1.0, ge=0.0)  # 0: greedy
    top_k: int | None = Field(50, ge=1)
    seed: int | None = None

    def sampling(self) -> Sampling:
        return Sampling(temperature=self.temperature, top_k=self.top_k)


class SpeechRequest(_Audio):
    """POST /v1/audio/speech (OpenAI's fields; `instructions` is accepted and not used)."""

    voice: str | dict = "default"  # "default" or a name given with --voice; {"id": name} as OpenAI allows
    speed: float = 1.0
    stream_format: Literal["audio"] | None = None  # "audio": the same as stream=true
    instructions: str | None = None
    max_seconds: float = 10.0  # longest speech to generate


class CaptionRequest(_Audio):
    """POST /v1/audio/music and /v1/audio/sfx."""

    input: str = Field(validation_alias=AliasChoices("input", "caption"))
    duration: float | None = None  # seconds (default: music 8, sfx 4), capped by the model's context
    guidance: float = 3.0  # classifier-free guidance scale


def _error(status: int, message: str, param: str | None = None, headers: dict | None = None) -> JSONResponse:
    body = {
        "message": message,
        "type": ERROR_TYPES.get(status, "server_error"),
        "param": param,
        "code": status,
    }
    return JSONResponse({"error": body}, status_code=status, headers=headers)


class _Guard:
    """ASGI middleware: API key, body size (413), and per-endpoint request counts and latency."""

    def __init__(self, app, config: ServeConfig, metrics: Metrics):
        self.app, self.config, self.metrics = app, config, metrics
        self.limit = int(config.max_upload_mb * 2**20)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        endpoint = path if path in ENDPOINTS else "other"
        headers = dict(scope["headers"])
        status, started = [500], time.monotonic()

        async def send_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            refusal = self._refuse(path, headers)
            if refusal is not None:
                return await refusal(scope, receive, send_status)
            await self.app(scope, self._bounded(receive), send_status)
        finally:
            self.metrics.requests.labels(endpoint, str(status[0])).inc()
            if endpoint.startswith("/v1/audio"):
                self.metrics.latency.labels(endpoint).observe(time.monotonic() - started)

    def _refuse(self, path: str, headers: dict) -> JSONResponse | None:
        key = self.config.api_key
        sent = headers.get(b"authorization", b"")
        if key and path.startswith("/v1/") and not hmac.compare_digest(sent, f"Bearer {key}".encode()):
            return _error(401, "missing or wrong API key: send 'Authorization: Bearer KEY'")
        length = headers.get(b"content-length", b"0")
        if length.isdigit() and int(length) > self.limit:
            return _error(
                413,
                f"request body is {int(length) / 2**20:.1f} MiB; the limit is {self.config.max_upload_mb:g} MiB",
            )
        return None

    def _bounded(self, receive):
        """receive, failing with 413 once the body passes the limit (bodies sent without a length)."""
        seen = [0]

        async def bounded():
            message = await receive()
            if message["type"] == "http.request":
                seen[0] += len(message.get("body", b""))
                if seen[0] > self.limit:
                    raise HTTPException(
                        413, f"request body is over the limit of {self.config.max_upload_mb:g} MiB"
                    )
            return message

        return bounded


def create_app(lm: AudioLM, config: ServeConfig, model_id: str | None = None) -> FastAPI:
    """The FastAPI app serving lm under config; the scheduler runs while the app's lifespan does."""
    engine: Engine | None = None
    metrics = Metrics(lambda: engine.scheduler.queue_length, lambda: engine.scheduler.batch_size)
    engine = Engine(lm, config, model_id, on_step=metrics.on_step, on_cancel=metrics.cancelled.inc)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        engine.start()
        try:
            yield
        finally:
            engine.stop()

    app = FastAPI(title="audiollm", lifespan=lifespan)
    app.state.engine, app.state.metrics = engine, metrics
    app.add_middleware(_Guard, config=config, metrics=metrics)
    _add_errors(app)
    _add_info_routes(app, engine, metrics)
    _add_audio_routes(app, engine, metrics)
    return app


def _add_errors(app: FastAPI) -> None:
    @app.exception_handler(ServeError)
    async def serve_error(_request: Request, e: ServeError):
        return _error(e.status, e.message, e.param, e.headers)

    @app.exception_handler(formats.UploadError)
    async def upload_error(_request: Request, e: formats.UploadError):
        return _error(e.status, str(e), "file")

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, e: RequestValidationError):
        first = e.errors()[0] if e.errors() else {"loc": (), "msg": "invalid request"}
        param = ".".join(str(x) for x in first["loc"] if x not in ("body", "form", "query"))
        return _error(400, f"{param or 'request'}: {first['msg']}", param or None)

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, e: HTTPException):
        return _error(e.status_code, str(e.detail), headers=getattr(e, "headers", None))


def _add_info_routes(app: FastAPI, engine: Engine, metrics: Metrics) -> None:
    card = {"id": engine.model_id, "object": "model", "created": int(time.time()), "owned_by": "audiollm"}

    @app.get("/health")
    async def health():
        s = engine.scheduler
        return {"status": "ok", "model": engine.model_id, "queue_length": s.queue_length,
                "running": s.batch_size, "max_batch": s.max_batch}  # fmt: skip

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [card]}

    @app.get("/v1/models/{model}")
    async def model(model: str):
        engine.check_model(model)
        return card

    @app.get("/metrics")
    async def prometheus():
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)


def _add_audio_routes(app: FastAPI, engine: Engine, metrics: Metrics) -> None:
    @app.post("/v1/audio/transcriptions")
    async def transcriptions(
        request: Request,
        file: Annotated[UploadFile, File()],
        model: Annotated[str, Form()],
        response_format: Annotated[str, Form()] = "json",
        temperature: Annotated[float, Form(ge=0.0)] = 0.0,
        language: Annotated[str | None, Form()] = None,  # accepted; the model has one language
        prompt: Annotated[str | None, Form()] = None,  # accepted; not used
    ):
        engine.check_model(model)
        if response_format not in ("json", "text"):
            raise ServeError(400, f"response_format {response_format!r}: use json or text", "response_format")
        data = await file.read()
        text = await engine.transcribe(data, file.filename or "file", temperature, request.is_disconnected)
        return PlainTextResponse(text) if response_format == "text" else {"text": text}

    @app.post("/v1/audio/speech")
    async def speech(request: Request, body: SpeechRequest):
        engine.check_model(body.model)
        if body.speed != 1.0:
            raise ServeError(400, "speed: only 1.0 is supported", "speed")
        voice = body.voice.get("id", "") if isinstance(body.voice, dict) else body.voice
        job = engine.speech_job(body.input, voice, body.max_seconds, body.sampling(), body.seed)
        stream = body.stream or body.stream_format == "audio"
        return await _audio_response(request, engine, metrics, job, body.response_format, stream)

    for task, default in (("music", 8.0), ("sfx", 4.0)):
        _add_captioned(app, engine, metrics, task, default)


def _add_captioned(app: FastAPI, engine: Engine, metrics: Metrics, task: str, default: float) -> None:
    @app.post(f"/v1/audio/{task}", name=task)
    async def captioned(request: Request, body: CaptionRequest):
        engine.check_model(body.model)
        seconds = body.duration if body.duration is not None else default
        job = engine.captioned_job(task, body.input, seconds, body.guidance, body.sampling(), body.seed)
        return await _audio_response(request, engine, metrics, job, body.response_format, body.stream)


async def _audio_response(request: Request, engine: Engine, metrics: Metrics, job, fmt: str, stream: bool):
    """The clip as one body, or streamed (wav header first, then PCM as it is decoded)."""
    sr, channels = engine.lm.codec.sample_rate, engine.lm.codec.channels
    headers = {"X-Sample-Rate": str(sr), "X-Channels": str(channels)}
    if not stream:
        wav = await engine.generate_audio(job, request.is_disconnected)
        return Response(formats.encode(wav, sr, fmt), media_type=formats.MEDIA_TYPES[fmt], headers=headers)
    if fmt not in formats.STREAMABLE:
        raise ServeError(
            400,
            f"response_format {fmt!r} cannot stream; use {' or '.join(formats.STREAMABLE)}",
            "response_format",
        )
    pieces = engine.stream_audio(job)  # submitted now: a full queue is a 429 before any byte is sent
    started = time.monotonic()

    async def body() -> AsyncIterator[bytes]:
        first = True
        try:
            if fmt == "wav":
                yield formats.wav_header(sr, channels)
            async for piece in pieces:
                if first:
                    metrics.first_audio.observe(time.monotonic() - started)
                    first = False
                yield formats.pcm16(piece)
        except ServeError:  # timed out or failed after the headers left: end the stream
            return
        finally:
            job.cancel()  # a client that went away frees its rows at the next step (no await: cancelled)

    return StreamingResponse(body(), media_type=formats.MEDIA_TYPES[fmt], headers=headers)


class BackgroundServer:
    """A uvicorn server for app on host:port (0: any free port) in a thread; `with` starts and stops it."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0, **uvicorn_options):
        import uvicorn

        options = {"log_level": "warning"} | uvicorn_options
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, **options))
        self.thread = threading.Thread(target=self.server.run, name="audiollm-http", daemon=True)
        self.host = host

    @property
    def port(self) -> int:
        return self.server.servers[0].sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> BackgroundServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start on {self.host}")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def serve(config: ServeConfig) -> int:
    """Load config.model and serve it until interrupted (what `audiollm serve` runs)."""
    import uvicorn

    # before any thread of the server runs torch (each keeps the count it saw): the scheduler thread and the
    # codec workers each run a team of this many, so they share the cores
    threads = set_threads(config.torch_threads())
    lm = AudioLM.from_pretrained(config.model, device=config.device)
    app = create_app(lm, config)
    bound = 4 * (config.max_queue + config.max_batch)  # open connections; beyond: 503 from uvicorn
    print(f"audiollm serve: {config.model} on http://{config.host}:{config.port} (max batch {config.max_batch}, "
          f"{config.codec_workers} codec workers, {threads} torch threads each)")  # fmt: skip
    uvicorn.run(app, host=config.host, port=config.port, limit_concurrency=bound, log_level="info")
    return 0
