"""The quickstart pipeline: a small offline corpus -> codes -> SentencePiece -> this recipe's training run ->
evaluation, samples and REPORT.md. `audiollm quickstart` (and `make quickstart`) runs `run`.

Paths of the recipe are found from this file, so the command runs from any directory; the real recordings
are read from `AUDIOLLM_SHARED_DATA` (default: ../shared/data beside the repository) unless `shared` is given.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import data_prep
from audiollm.api import PRETRAINED, AudioLM
from audiollm.data.manifest import manifest_texts, read_manifest
from audiollm.data.shards import tokenize_manifest
from audiollm.eval.plots import loss_curves
from audiollm.eval.suite import evaluate
from audiollm.eval.tts import speech_samples
from audiollm.text import train_sentencepiece
from audiollm.train.cli import fit_main

RECIPES = Path(__file__).resolve().parents[1]
CONFIG = RECIPES / "quickstart" / "config.yaml"
CODEC_CONFIG = RECIPES / "codec" / "config.yaml"  # trains a codec when none ships (see `choose_codec`)
SHARED_DATA = Path(os.environ.get("AUDIOLLM_SHARED_DATA", RECIPES.parent.parent / "shared" / "data"))
SHIPPED_CODEC = PRETRAINED["tiny"] / "codec"  # the codec of `tiny`


def run(
    out: Path,
    *,
    codec: str | None,
    shared: Path | None,
    minutes: float,
    music_minutes: float,
    sfx_minutes: float,
    codec_minutes: int,
    max_steps: int,
    train_minutes: int,
    eval_limit: int,
    seed: int,
) -> int:
    """Build the corpus in `out/data`, tokenise it with `codec` (default: the shipped one, see
    `choose_codec`), train a SentencePiece tokenizer and the LM, evaluate, write `out/REPORT.md`; returns 0."""
    corpora = {  # folder -> (corpus, source, options)
        "speech": ("offline-speech", None, {"minutes": minutes, "seed": seed}),
        "fsdd": ("fsdd", (shared or SHARED_DATA) / "fsdd_spoken_digits", {}),
        "music": ("offline-music", None, {"minutes": music_minutes, "seed": seed}),
        "sfx": ("offline-sfx", None, {"minutes": sfx_minutes, "seed": seed}),
    }
    for name, (corpus, src, options) in corpora.items():
        print(f"[quickstart] prepare {corpus} -> {out / 'data' / name}")
        data_prep.prepare(corpus, src, out / "data" / name, **options)
    splits = {name: sorted((out / "data" / name).glob("*.jsonl")) for name in corpora}
    fit = {name: [m for m in ms if m.stem in ("train", "valid")] for name, ms in splits.items()}
    codec = choose_codec(codec, out, [m for m in fit["speech"] if m.stem == "train"], codec_minutes)
    for name, manifests in (
        ("speech", fit["speech"] + fit["fsdd"]),
        ("music", fit["music"]),
        ("sfx", fit["sfx"]),
    ):
        print(f"[quickstart] tokenize {name}")
        print(tokenize_manifest(manifests, out / "tok" / name, codec).describe())
    train_sentencepiece(manifest_texts(m for ms in fit.values() for m in ms), 512, out / "tokenizer")
    train(out, codec, max_steps, train_minutes)
    return report(out, splits, AudioLM.from_pretrained(out / "model"), eval_limit)


def choose_codec(codec: str | None, out: Path, speech: list[Path], minutes: int) -> str:
    """The codec to tokenise with: `codec`, else the shipped one, else (while no trained codec ships with the
    package) one trained here by `recipes/codec` for `minutes` on `speech` manifests (enough to run the
    pipeline, far too little for good audio)."""
    if codec is not None or SHIPPED_CODEC.is_dir():
        return codec or str(SHIPPED_CODEC)
    root = out / "codec"
    if not (root / "checkpoints" / "codec" / "config.json").is_file():
        print(f"[quickstart] no shipped codec: training recipes/codec for {minutes} min into {root}")
        overrides = {
            "--data.train_manifests": json.dumps([str(m) for m in speech]),
            "--trainer.default_root_dir": str(root), "--checkpoint.dirpath": str(root / "checkpoints"),
            "--trainer.max_time": f"00:00:{minutes:02d}:00",
        }  # fmt: skip
        if fit_main(["--config", str(CODEC_CONFIG), *(x for kv in overrides.items() for x in kv)]) != 0:
            raise RuntimeError("training the codec failed (the error is above)")
    return str(root / "checkpoints" / "codec")


def train(out: Path, codec: str, max_steps: int, train_minutes: int) -> None:
    """Train this recipe's LM on the shards in `out/tok` with the tokenizer in `out/tokenizer`; the model is
    exported to `out/model`."""
    sources = [
        {"path": str(out / "tok" / "speech"), "tasks": {"asr": 1.0, "tts": 1.0, "continue": 0.1}},
        {"path": str(out / "tok" / "music"), "tasks": {"music": 0.1}},
        {"path": str(out / "tok" / "sfx"), "tasks": {"sfx": 0.1}},
    ]
    overrides = {
        "--data.sources": json.dumps(sources), "--data.tokenizer": str(out / "tokenizer"),
        "--model.audio_embed_from": codec,  # audio embeddings start from its codebooks (BENCHMARKS "LM pilots")
        "--trainer.default_root_dir": str(out), "--checkpoint.dirpath": str(out / "checkpoints"),
        "--trainer.max_steps": str(max_steps), "--trainer.max_time": f"00:00:{train_minutes:02d}:00",
        # a loss every 10 steps (every step of a very short run), so the report can draw its curve
        "--trainer.log_every_n_steps": str(max(1, min(10, max_steps // 2))),
    }  # fmt: skip
    if fit_main(["--config", str(CONFIG), *(x for kv in overrides.items() for x in kv)]) != 0:
        raise RuntimeError("training the LM failed (the error is above)")


def report(out: Path, splits: dict[str, list[Path]], lm: AudioLM, limit: int) -> int:
    """Evaluate the trained model on held-out splits, write samples and REPORT.md beside it; returns 0."""
    tests = {f"{n}/{m.stem}": m for n in ("speech", "fsdd") for m in splits[n] if m.stem.startswith("test")}
    lines = [f"# quickstart report\n\nModel: `{out / 'model'}`\n"]
    logs = sorted((out / "csv").glob("version_*/metrics.csv"), key=lambda m: m.stat().st_mtime)
    if logs:
        curve = loss_curves(logs[-1], out / "loss.png")
        lines.append(f"![training and validation loss]({curve.relative_to(out)})\n")
    for name, manifest in tests.items():
        result = evaluate("asr", manifest, out / "model", limit=limit)
        result.write(out / "eval" / f"asr_{name.replace('/', '_')}.json")
        lines += [f"## ASR on {name}\n", "```", result.table(), "```\n"]
    speech_test = out / "data" / "speech" / "test.jsonl"
    result = evaluate("tts", speech_test, out / "model", limit=max(1, limit // 5))
    result.write(out / "eval" / "tts_speech_test.json")
    lines += ["## TTS intelligibility (pocketsphinx) on speech/test\n", "```", result.table(), "```\n"]
    examples = list(read_manifest(speech_test))[:3]
    models = {"this run's model": (lm, "tts")}
    if (PRETRAINED["tiny"] / "config.json").is_file():
        models["the shipped `tiny`"] = (AudioLM.from_pretrained("tiny"), "tiny_tts")
    for title, (model, prefix) in models.items():
        samples, picture = speech_samples(model, examples, out / "samples", prefix, title)
        lines += [f"## Samples: {title}, on held-out sentences\n", *samples]
        lines += ["", f"![spectrograms of {title}'s samples]({picture.relative_to(out)})", ""]
    report_path = out / "REPORT.md"
    report_path.write_text("\n".join(lines) + "\n")
    print(f"[quickstart] wrote {report_path}")
    return 0
