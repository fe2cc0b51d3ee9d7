"""The `audiollm` command: thin wrappers over library functions. Heavy imports happen inside commands."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]  # the checkout `make setup` installs audiollm from (editable)


def _tokenize(args: argparse.Namespace) -> int:
    from audiollm.data.shards import tokenize_manifest

    summary = tokenize_manifest(
        args.manifests,
        args.out,
        codec=args.codec,
        checkpoint=args.checkpoint,
        bandwidth=args.bandwidth,
        batch_seconds=args.batch_seconds,
        shard_seconds=args.shard_seconds,
        shard_records=args.shard_records,
        device=args.device,
    )
    print(summary.describe())
    return 0


def _add_tokenize(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tokenize",
        help="encode a manifest's audio into code shards (data-parallel under torchrun or srun)",
    )
    p.add_argument(
        "manifests",
        nargs="+",
        help="JSONL manifests (id, audio, optional text/caption/speaker/start/duration)",
    )
    p.add_argument(
        "--codec", required=True, help="codec name (encodec_24khz, encodec_48khz) or a saved codec dir"
    )
    p.add_argument("--checkpoint", help="local EnCodec checkpoint file (.th state dict)")
    p.add_argument(
        "--bandwidth", type=float, help="EnCodec bandwidth in kbps (chooses the number of codebooks)"
    )
    p.add_argument(
        "--batch-seconds",
        type=float,
        default=None,
        help="padded audio per encoder batch, seconds (default: 80 on CUDA, one clip at a time on CPU)",
    )
    p.add_argument(
        "--shard-seconds",
        type=float,
        default=600.0,
        help="most audio per shard, seconds (what a kill can lose)",
    )
    p.add_argument("--shard-records", type=int, default=2000, help="most records per shard")
    p.add_argument(
        "--device",
        default="cpu",
        help="torch device for the codec ('cuda': cuda:LOCAL_RANK under torchrun/srun)",
    )
    p.add_argument("--out", required=True, help="output folder for shards and index.jsonl")
    p.set_defaults(func=_tokenize)


def _convert(args: argparse.Namespace) -> int:
    from audiollm.convert import convert_gpt_neox

    model = convert_gpt_neox(
        args.src, args.out, num_codebooks=args.num_codebooks, codebook_size=args.codebook_size
    )
    print(
        f"wrote {args.out}: {model.num_params() / 1e6:.1f} M parameters, {model.config.vocab.size} token ids"
    )
    return 0


def _add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="import a pretrained text LM (Pythia) as an audiollm checkpoint")
    p.add_argument("family", choices=["gpt-neox"], help="checkpoint family (gpt-neox: the Pythia models)")
    p.add_argument("src", help="Hugging Face checkpoint directory (config.json, weights, tokenizer.json)")
    p.add_argument("--out", required=True, help="output directory for the audiollm checkpoint")
    p.add_argument("--num-codebooks", type=int, default=8, help="audio codebooks K of the codec to be used")
    p.add_argument("--codebook-size", type=int, default=1024, help="codes per codebook of that codec")
    p.set_defaults(func=_convert)


def _prepare(args: argparse.Namespace) -> int:
    import data_prep  # a leaf package beside audiollm: loaded only here, by name

    manifest = data_prep.prepare(args.corpus, args.src, args.out, minutes=args.minutes, seed=args.seed)
    print(f"wrote {manifest}: {data_prep.describe(manifest.parent)}")
    return 0


def _add_prepare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help="write JSONL manifests for a corpus, or build an offline corpus")
    p.add_argument(
        "corpus",
        help="librispeech, libritts, ljspeech, an4, fsdd, musiccaps, audiocaps, offline-speech, offline-music "
        "or offline-sfx",
    )
    p.add_argument(
        "--src", help="the corpus folder as published (offline builders: optional extra recordings)"
    )
    p.add_argument(
        "--out", required=True, help="output folder for <split>.jsonl, rejects.jsonl, summary.json"
    )
    p.add_argument("--minutes", type=float, help="offline builders: minutes of audio to produce (default 10)")
    p.add_argument("--seed", type=int, help="offline builders: random seed (default 0)")
    p.set_defaults(func=_prepare)


def _augment(args: argparse.Namespace) -> int:
    from audiollm.data.augment import speed_perturb
    from audiollm.data.manifest import read_manifest, write_jsonl

    made, rejects = speed_perturb(list(read_manifest(args.manifest)), args.speeds, args.out)
    path = write_jsonl(Path(args.out) / Path(args.manifest).name, made)
    write_jsonl(Path(args.out) / "rejects.jsonl", rejects)
    print(f"wrote {path}: {len(made)} records at speeds {args.speeds}; {len(rejects)} clips unreadable")
    return 0


def _add_augment(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("augment", help="speed-perturbed copies of a manifest's audio, with their manifest")
    p.add_argument("manifest", help="JSONL manifest")
    p.add_argument(
        "--speeds", type=float, nargs="+", default=[0.9, 1.1], help="play-speed factors (tempo and pitch)"
    )
    p.add_argument("--out", required=True, help="output folder: audio/ and a manifest of the same name")
    p.set_defaults(func=_augment)


def _train_tokenizer(args: argparse.Namespace) -> int:
    from audiollm.data.manifest import manifest_texts
    from audiollm.text import train_sentencepiece

    texts = manifest_texts(args.manifests)
    tokenizer = train_sentencepiece(texts, args.vocab_size, args.out)
    print(f"wrote {tokenizer.path}: {tokenizer.vocab_size} pieces from {len(texts)} texts")
    return 0


def _add_train_tokenizer(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train-tokenizer", help="train a SentencePiece text tokenizer on manifests' text and captions"
    )
    p.add_argument(
        "manifests", nargs="+", help="JSONL manifests (their 'text' and 'caption' fields are used)"
    )
    p.add_argument("--vocab-size", type=int, default=1024, help="pieces (shrunk when the text is too small)")
    p.add_argument("--out", required=True, help="output folder for tokenizer.model")
    p.set_defaults(func=_train_tokenizer)


def _model_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="tiny", help="shipped model name or a trained checkpoint directory")
    p.add_argument("--device", default=None, help="torch device (default: cuda when present, else cpu)")


def _fast_args(p: argparse.ArgumentParser) -> None:
    """Generation speed-ups of `AudioLM.from_pretrained` (issue 17)."""
    p.add_argument(
        "--quantize",
        default=None,
        help="int8: int8 Linear weights, per-channel scales (CPU: int8 activations too; audiollm.quantize)",
    )
    p.add_argument(
        "--speculative",
        action="store_true",
        help="speculative decoding, drafting with the model's first layers",
    )


def _transcribe(args: argparse.Namespace) -> int:
    from audiollm.api import AudioLM

    lm = AudioLM.from_pretrained(
        args.model, device=args.device, quantize=args.quantize, speculative=args.speculative
    )
    texts = lm.transcribe(list(args.files), skip_errors=True)  # a bad file is reported, the rest transcribed
    for path, text in zip(args.files, texts, strict=True):
        if isinstance(text, Exception):
            print(f"audiollm transcribe: error: {text}", file=sys.stderr)
            continue
        print(
            json.dumps({"file": path, "text": text}, ensure_ascii=False) if args.json else f"{path}\t{text}"
        )
    return 1 if any(isinstance(t, Exception) for t in texts) else 0


def _check_output(path: str) -> None:
    """Refuse an output file that audio.save cannot write before any model is loaded or run."""
    from audiollm import audio

    if Path(path).suffix.lower() not in audio.WRITABLE_FORMATS:
        raise ValueError(f"-o {path}: cannot write '{Path(path).suffix}'; use one of {sorted(audio.WRITABLE_FORMATS)}")  # fmt: skip


def _generate(args: argparse.Namespace) -> int:
    """tts / music / sfx / continue: one AudioLM call, the result written to -o."""
    from audiollm import audio
    from audiollm.api import AudioLM

    _check_output(args.output)
    lm = AudioLM.from_pretrained(
        args.model, device=args.device, quantize=args.quantize, speculative=args.speculative
    )
    if args.command == "tts":
        wav, sr = lm.synthesize(
            args.input, voice_prompt=args.voice_prompt, max_seconds=args.max_seconds, seed=args.seed
        )
    elif args.command == "continue":
        wav, sr = lm.continue_audio(args.input, duration=args.duration, seed=args.seed)
    else:
        wav, sr = lm.generate_captioned(
            args.command,
            args.input,
            duration=args.duration,
            guidance_scale=args.guidance_scale,
            seed=args.seed,
        )
    print(f"wrote {audio.save(args.output, wav, sr)} ({wav.shape[-1] / sr:.2f} s at {sr} Hz)")
    return 0


def _add_inference(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("transcribe", help="speech to text")
    p.add_argument("files", nargs="+", help="audio files (wav, flac, ogg, mp3, sph)")
    p.add_argument("--json", action="store_true", help="print one JSON object per file")
    _model_arg(p)
    _fast_args(p)
    p.set_defaults(func=_transcribe)
    specs = {
        "tts": ("text to speech", "TEXT", "the text to speak"),
        "music": ("music from a caption", "CAPTION", "what the music should sound like"),
        "sfx": ("a sound effect from a caption", "CAPTION", "what the sound should be"),
        "continue": ("continue an audio clip", "FILE", "the clip to continue"),
    }
    for name, (help_text, metavar, what) in specs.items():
        p = sub.add_parser(name, help=help_text)
        p.add_argument("input", metavar=metavar, help=what)
        p.add_argument("-o", "--output", required=True, help="output .wav or .flac")
        p.add_argument("--seed", type=int, default=None, help="seed for reproducible sampling")
        if name == "tts":
            p.add_argument("--voice-prompt", default=None, help="reference recording of the voice to use")
            p.add_argument("--max-seconds", type=float, default=10.0, help="longest speech to generate")
        else:
            p.add_argument("--duration", type=float, default=4.0, help="seconds of audio to generate")
        if name in ("music", "sfx"):
            p.add_argument(
                "--guidance-scale", type=float, default=3.0, help="classifier-free guidance strength"
            )
        _model_arg(p)
        _fast_args(p)
        p.set_defaults(func=_generate)


def _add_eval(sub: argparse._SubParsersAction) -> None:
    def run(args: argparse.Namespace) -> int:
        from audiollm.eval.suite import evaluate

        report = evaluate(
            args.task, args.manifest, args.model, args.codec, args.limit, args.seed, args.device,
            seconds=args.seconds, judge=args.judge, quantize=args.quantize, speculative=args.speculative,
        )  # fmt: skip
        print(report.table())
        if args.out:
            print(f"wrote {report.write(args.out)}")
        return 0

    p = sub.add_parser("eval", help="score a model (or a codec) on a manifest; print a table, write JSON")
    p.add_argument(
        "task",
        choices=["asr", "tts", "codec", "music", "sfx", "voice", "continue"],
        help="asr: WER/CER, RTF; tts: pocketsphinx WER of generated vs reference speech; codec: log-mel, "
        "STOI, SI-SNR, kbps beside Opus; music/sfx: loudness, silence, clipping, spectral statistics; "
        "voice / continue: speaker similarity of speech made from a voice prompt / a continued clip",
    )
    p.add_argument(
        "--manifest", required=True, help="JSONL manifest (asr/tts use 'text', music/sfx 'caption')"
    )
    p.add_argument("--codec", help="codec: a codec name or saved codec dir instead of the model's codec")
    p.add_argument("--limit", type=int, help="evaluate only the first N usable records")
    p.add_argument("--seed", type=int, default=0, help="sampling seed for tts / music / sfx")
    p.add_argument("--seconds", type=float, help="music / sfx: seconds per caption (default: the record's)")
    p.add_argument(
        "--judge", help="music / sfx: manifest of clips with a 'label' to classify the generated sounds by"
    )
    p.add_argument("--out", help="write the report (summary, per-item rows, notes) to this JSON file")
    _model_arg(p)
    _fast_args(p)
    p.set_defaults(func=run)


def _quickstart(args: argparse.Namespace) -> int:
    """Run recipes/quickstart/pipeline.py of the checkout audiollm is installed from, from any directory."""
    path = REPO / "recipes" / "quickstart" / "pipeline.py"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: install audiollm from a checkout of the repository")
    if str(REPO) not in sys.path:  # recipes/ is a leaf beside audiollm, not installed
        sys.path.insert(0, str(REPO))
    from recipes.quickstart import pipeline  # loaded only here, by name

    return pipeline.run(
        Path(args.out),
        codec=args.codec,
        shared=Path(args.shared) if args.shared else None,
        minutes=args.minutes,
        music_minutes=args.music_minutes,
        sfx_minutes=args.sfx_minutes,
        codec_minutes=args.codec_minutes,
        max_steps=args.max_steps,
        train_minutes=args.train_minutes,
        eval_limit=args.eval_limit,
        seed=args.seed,
    )


def _add_quickstart(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "quickstart", help="build an offline corpus, tokenise, train, evaluate (recipes/quickstart)"
    )
    p.add_argument("--out", default="runs/quickstart", help="working folder")
    p.add_argument("--codec", help="codec name or saved codec dir (default: the shipped 16 kHz speech codec)")
    p.add_argument(
        "--shared",
        help="folder of the real recordings shipped with the repo (default: $AUDIOLLM_SHARED_DATA, else "
        "../shared/data beside the repository)",
    )
    p.add_argument("--minutes", type=float, default=10.0, help="minutes of offline speech to synthesise")
    p.add_argument("--music-minutes", type=float, default=1.0, help="minutes of rendered music21 scores")
    p.add_argument("--sfx-minutes", type=float, default=1.0, help="minutes of synthesised sound effects")
    p.add_argument("--codec-minutes", type=int, default=5, help="codec training when no codec ships")
    p.add_argument("--max-steps", type=int, default=600, help="training steps (the cosine schedule's length)")
    p.add_argument("--train-minutes", type=int, default=12, help="stop training after this many minutes")
    p.add_argument("--eval-limit", type=int, default=40, help="held-out records per ASR test split")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_quickstart)


def _add_demo(sub: argparse._SubParsersAction) -> None:
    def run(args: argparse.Namespace) -> int:
        try:
            from demos import app  # a leaf package beside audiollm (it imports gradio): loaded only here
        except ModuleNotFoundError as e:
            raise RuntimeError(f"the demo needs {e.name}: pip install -e '.[demo]'") from None
        app.serve(args.model, host=args.host, port=args.port, share=args.share, device=args.device)
        return 0

    p = sub.add_parser("demo", help="launch the Gradio demo: transcribe, speak, music and sound, compose")
    _model_arg(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 serves the network)")
    p.add_argument("--port", type=int, default=7860, help="port to listen on")
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    p.set_defaults(func=run)


def _add_compose(sub: argparse._SubParsersAction) -> None:
    def run(args: argparse.Namespace) -> int:
        from audiollm import audio
        from audiollm.compose import compose

        _check_output(args.output)
        result = compose(args.script, model=args.model, seed=args.seed, cache_dir=args.cache_dir,
                         use_cache=not args.no_cache, device=args.device)  # fmt: skip
        written = [audio.save(args.output, result.audio, result.sample_rate)]
        if args.plot:
            written.append(result.timeline(args.plot))
        if args.save_script:
            Path(args.save_script).write_text(json.dumps(result.script.to_dict(), indent=2) + "\n")
            written.append(Path(args.save_script))
        seconds = result.audio.shape[-1] / result.sample_rate
        print(
            f"wrote {', '.join(map(str, written))} ({len(result.script.elements)} elements, {seconds:.2f} s)"
        )
        return 0

    p = sub.add_parser("compose", help="generate and mix a script of speech, music and sound effects")
    p.add_argument("script", metavar="SCRIPT.json|PROMPT", help="a JSON script file, or a request in words")
    p.add_argument("-o", "--output", required=True, help="output .wav or .flac")
    p.add_argument("--plot", help="also write the timeline picture (PNG) here")
    p.add_argument("--save-script", help="also write the resolved script (every start and end) here")
    p.add_argument("--seed", type=int, default=0, help="seed for reproducible generation")
    p.add_argument("--cache-dir", help="generated-clip cache (default: ~/.cache/audiollm/compose)")
    p.add_argument("--no-cache", action="store_true", help="generate every element afresh")
    _model_arg(p)
    p.set_defaults(func=run)


def _pass_fit_overrides(p: argparse.ArgumentParser) -> None:
    """Let `p` keep the arguments it does not declare (any `audiollm fit` override, e.g.
    --trainer.max_steps 10) in `args.overrides`, in order, instead of rejecting them."""
    parse = p.parse_known_args

    def parse_known_args(args=None, namespace=None):
        namespace, rest = parse(args, namespace)
        namespace.overrides = [*getattr(namespace, "overrides", []), *rest]
        return namespace, []

    p.parse_known_args = parse_known_args  # type: ignore[method-assign]


def _fit_argv(args: argparse.Namespace) -> list[str]:
    return [*(x for c in args.config for x in ("--config", c)), *args.overrides]


def _suite_parser(sub: argparse._SubParsersAction, name: str, help_text: str) -> argparse.ArgumentParser:
    p = sub.add_parser(
        name,
        help=help_text,
        allow_abbrev=False,
        usage=f"audiollm {name} --config CFG [options] [fit overrides]",
    )
    p.add_argument(
        "--config",
        action="append",
        required=True,
        help="an `audiollm fit` config of kind lm (repeatable, as for fit)",
    )
    _pass_fit_overrides(p)
    return p


def _add_suite(sub: argparse._SubParsersAction) -> None:
    def run(args: argparse.Namespace) -> int:
        from audiollm.train.suite import names, run_suite

        root = run_suite(_fit_argv(args), sizes=names(args.sizes), every=args.every)
        print(f"[suite] done: every size's steps are under {root}/<size>/steps/")
        return 0

    p = _suite_parser(sub, "suite", "train several sizes on the same data order, saving log-spaced steps")
    p.add_argument(
        "--sizes", help="comma-separated names of audiollm.train.suite.SIZES (default: debug,tiny,small)"
    )
    p.add_argument(
        "--every",
        type=int,
        help="after the powers of two below it, save every N steps (default 1000)",
    )
    p.set_defaults(func=run)


def _add_batches(sub: argparse._SubParsersAction) -> None:
    def run(args: argparse.Namespace) -> int:
        from audiollm.train.suite import batch_lines, names

        for line in batch_lines(_fit_argv(args), args.step, names(args.sizes), args.rank, args.world_size):
            print(json.dumps(line))
        return 0

    p = _suite_parser(sub, "batches", "print what training step N read: one JSON line per example")
    p.add_argument("--step", type=int, required=True, help="optimiser step (0 is the first)")
    p.add_argument("--sizes", help="comma-separated sizes to build it for (each line then names its size)")
    p.add_argument("--rank", type=int, help="only this rank's examples (default: every rank's)")
    p.add_argument("--world-size", type=int, help="ranks (default: the config's trainer.devices x num_nodes)")
    p.set_defaults(func=run)


def _add_analyze(sub: argparse._SubParsersAction) -> None:
    def run(args: argparse.Namespace) -> int:
        from audiollm.train.suite import analyze

        path = analyze(
            args.suite_dir, args.manifest, args.out, args.limit, args.batches, args.device or "cpu"
        )
        print(f"wrote {path} and {path.with_name('curves.png')}")
        return 0

    p = sub.add_parser("analyze", help="score every saved step of a suite: curves.csv and curves.png")
    p.add_argument("suite_dir", help="a suite's root (its trainer.default_root_dir)")
    p.add_argument("--manifest", help="JSONL manifest with 'text' for ASR WER/CER at every step")
    p.add_argument("--out", required=True, help="output folder for curves.csv and curves.png")
    p.add_argument("--limit", type=int, default=20, help="manifest records transcribed per checkpoint")
    p.add_argument(
        "--batches", type=int, help="valid batches per checkpoint (default: the config's data.valid_batches)"
    )
    p.add_argument("--device", default=None, help="torch device (default: cpu)")
    p.set_defaults(func=run)


def _add_sweep(sub: argparse._SubParsersAction) -> None:
    def run(args: argparse.Namespace) -> int:
        from audiollm.train.suite import names
        from audiollm.train.sweep import run_sweep

        lrs = [float(x) for x in names(args.lrs) or []]
        out = run_sweep(
            _fit_argv(args), names(args.sizes) or [], lrs, args.mixtures, args.out, names(args.predict) or []
        )
        print(f"wrote {out / 'sweep.csv'}, {out / 'lr_fit.json'} and {out / 'lr_fit.png'}")
        return 0

    p = _suite_parser(
        sub, "sweep", "train a grid of sizes x learning rates (x mixtures); fit the best lr to size"
    )
    p.add_argument("--sizes", required=True, help="comma-separated sizes (at least two)")
    p.add_argument("--lrs", required=True, help="comma-separated peak learning rates")
    p.add_argument("--mixtures", help='JSON (or a JSON file): {"name": {"task": weight, ...}, ...}')
    p.add_argument(
        "--predict", help="comma-separated sizes to predict a learning rate for (e.g. the next one up)"
    )
    p.add_argument("--out", help="output folder (default: <trainer.default_root_dir>/sweep)")
    p.set_defaults(func=run)


def _add_serve(sub: argparse._SubParsersAction) -> None:
    from audiollm.serve import add_arguments  # light: no fastapi until a server starts

    def run(args: argparse.Namespace) -> int:
        from audiollm.serve import from_args

        try:
            from audiollm.serve.app import serve
        except ModuleNotFoundError as e:
            raise RuntimeError(f"the server needs {e.name}: pip install -e '.[serve]'") from None
        return serve(from_args(args))

    p = sub.add_parser("serve", help="serve the model over HTTP: OpenAI-compatible audio endpoints, batched")
    add_arguments(p)
    p.set_defaults(func=run)


# Each entry adds one subcommand; `fit` is handled before argparse (its own CLI parses the rest).
SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_tokenize,
    _add_convert,
    _add_prepare,
    _add_augment,
    _add_train_tokenizer,
    _add_inference,
    _add_eval,
    _add_quickstart,
    _add_demo,
    _add_compose,
    _add_suite,
    _add_batches,
    _add_analyze,
    _add_sweep,
    _add_serve,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="audiollm", description="Large audio language models.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser(
        "fit", help="train a recipe: audiollm fit --config recipes/NAME/config.yaml", add_help=False
    )
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "fit":
        from audiollm.train.cli import fit_main

        return fit_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except (ValueError, RuntimeError, OSError) as e:
        print(f"audiollm {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
