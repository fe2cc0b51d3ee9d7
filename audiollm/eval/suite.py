"""One entry point for `audiollm eval asr|tts|codec|music|sfx`: manifest + model (or codec) -> Report."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from audiollm.api import AudioLM
from audiollm.codecs import Codec, load_codec
from audiollm.data.manifest import Record, read_manifest
from audiollm.eval.asr import evaluate_asr
from audiollm.eval.audio_stats import SoundJudge, evaluate_generation
from audiollm.eval.codec import evaluate_codec, evaluate_opus
from audiollm.eval.report import Report
from audiollm.eval.tts import evaluate_tts
from audiollm.tasks import TABLE

# The manifest field each evaluation needs besides `audio`: a task's, from the task table, except that
# scoring a continuation compares speakers; "codec" and "voice" (tts with a voice prompt) are not tasks.
NEEDS = {name: task.reads for name, task in TABLE.items()} | {
    "continue": "speaker", "codec": "audio", "voice": "text",
}  # fmt: skip


def evaluate(
    task: str,
    manifest: str | Path,
    model: str | Path = "tiny",
    codec: str | Path | None = None,
    limit: int | None = None,
    seed: int = 0,
    device: str | None = None,
    seconds: float | None = None,
    judge: str | Path | None = None,
    quantize: str | None = None,
    speculative: bool = False,
) -> Report:
    """Score `model` (or, for task "codec", `codec` when given) on the first `limit` usable records.
    music / sfx: `seconds` of audio per caption (default: each record's length); `judge`: a manifest of
    labelled clips to fit a `SoundJudge` on (class accuracy of the generated sounds); `quantize`,
    `speculative`: as in `AudioLM.from_pretrained` (the LM's tasks only)."""
    if task not in NEEDS:
        raise ValueError(f"unknown evaluation '{task}': use one of {', '.join(NEEDS)}")
    if task == "codec" and (quantize or speculative):
        raise ValueError("--quantize and --speculative apply to the LM's tasks, not to 'codec'")
    records, skipped = select(manifest, NEEDS[task], limit)
    if task == "codec":
        if codec:
            chosen = load_codec(codec, device=device or "cpu")
        else:
            chosen = AudioLM.from_pretrained(model, device=device).codec
        report = compare_with_opus(chosen, [r.audio for r in records], str(codec or model))
    else:
        lm = AudioLM.from_pretrained(model, device=device, quantize=quantize, speculative=speculative)
        if task == "asr":
            report = evaluate_asr(lm, records)
        elif task == "tts":
            report = evaluate_tts(lm, records, seed=seed)
        elif task in ("voice", "continue"):
            from audiollm.eval.speaker import evaluate_voice  # imports Resemblyzer (the eval extra)

            report = evaluate_voice(lm, records, "tts" if task == "voice" else "continue", seed=seed)
        else:
            fitted = SoundJudge(list(read_manifest(judge))) if judge else None
            report = evaluate_generation(lm, records, task, seed=seed, seconds=seconds, judge=fitted)
    if skipped:
        report.notes.append(f"skipped {skipped} records without '{NEEDS[task]}'")
    used = {"model": None, "codec": str(codec)} if codec and task == "codec" else {"model": str(model)}
    if task != "codec":
        used |= {"quantize": quantize, "speculative": speculative}
    report.settings |= {"manifest": str(manifest), **used}
    return report


def select(manifest: str | Path, needed: str, limit: int | None = None) -> tuple[list[Record], int]:
    """The first `limit` records of `manifest` with a non-empty `needed` field, and how many lacked it."""
    records, skipped = [], 0
    for record in read_manifest(manifest):
        if limit is not None and len(records) >= limit:
            break
        if (getattr(record, needed) or "").strip():
            records.append(record)
        else:
            skipped += 1
    if not records:
        raise ValueError(
            f"{manifest}: no record has a non-empty '{needed}' field, which this evaluation needs"
        )
    return records, skipped


def compare_with_opus(codec: Codec, files: Sequence[str], name: str) -> Report:
    """`evaluate_codec` over whole `files`, beside Opus (ffmpeg libopus) asked for the codec's bitrate."""
    ours = evaluate_codec(codec, files)
    opus = evaluate_opus(ours["kbps"], files, codec.sample_rate)
    summary = [{"system": name, **ours}, {"system": "opus", **opus}]
    notes = [
        f"both at {codec.sample_rate} Hz mono, whole files (a record's start/duration is not applied)",
        f"Opus asked for {ours['kbps']:g} kbps; its kbps column is measured from the packets written",
    ]
    return Report("codec", summary, [{"audio": f} for f in files], notes)
