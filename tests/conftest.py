"""Shared fixtures: paths to the real recordings in ../shared/data and small assets the tests make."""

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("AUDIOLLM_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} not present (set AUDIOLLM_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def speech_file(shared_data) -> Path:
    """A real LJSpeech utterance (FLAC, 22.05 kHz mono, ~10 s)."""
    return shared_data / "ljspeech_subset" / "wavs" / "LJ001-0001.flac"


def write_tone(path: Path, seconds: float = 1.0, sample_rate: int = 16000, channels: int = 1, freq=440.0):
    """Write a sine tone (PCM16) and return its path."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    x = 0.3 * np.sin(2 * np.pi * freq * t)
    sf.write(str(path), np.stack([x] * channels, axis=1), sample_rate)
    return path


def init_encodec_codebooks(model, wav: torch.Tensor) -> None:
    """Give an offline-built EnCodec non-degenerate codebooks: each RVQ layer's codebook is set to
    residual encoder outputs of `wav` (1, C, N), layer after layer, and marked initialised."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        residual = model.encoder(wav).transpose(1, 2).reshape(-1, model.quantizer.dimension)  # (T, D)
        for layer in model.quantizer.vq.layers:
            book = layer._codebook
            pick = torch.randint(len(residual), (book.codebook_size,), generator=g)
            embed = residual[pick] + 1e-3 * torch.randn(book.codebook_size, residual.shape[1], generator=g)
            book.embed.copy_(embed)
            book.embed_avg.copy_(embed)
            book.inited.fill_(1.0)
            residual = residual - book.decode(book.encode(residual))


@pytest.fixture(scope="session")
def encodec_24k_checkpoint(tmp_path_factory, speech_file) -> Path:
    """A state dict in the published `encodec_24khz-d7cc33bc.th` format, codebooks from real speech."""
    from encodec import EncodecModel

    from audiollm import audio

    torch.manual_seed(0)
    model = EncodecModel.encodec_model_24khz(pretrained=False)
    wav, _ = audio.load(speech_file, sample_rate=24000, channels=1)
    init_encodec_codebooks(model, wav[None])
    path = tmp_path_factory.mktemp("encodec") / "encodec_24khz-d7cc33bc.th"
    torch.save(model.state_dict(), path)
    return path


DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@pytest.fixture(scope="session")
def digits_tokenized(tmp_path_factory, shared_data, encodec_24k_checkpoint):
    """Real FSDD recordings (3 speakers x 10 digits x 2 takes + 1 valid take each) tokenised with the
    test EnCodec at 1.5 kbps (K=2), and a SentencePiece tokenizer over their transcripts.
    Returns (tokenised dir, tokenizer dir)."""
    from audiollm import load_codec
    from audiollm.data.manifest import write_jsonl
    from audiollm.data.shards import tokenize_manifest
    from audiollm.text import train_sentencepiece

    root = tmp_path_factory.mktemp("digits")
    rows = []
    for speaker in ("jackson", "nicolas", "theo"):
        for d in range(10):
            for take, split in ((0, "train"), (1, "train"), (2, "valid")):
                path = shared_data / "fsdd_spoken_digits" / "recordings" / f"{d}_{speaker}_{take}.wav"
                caption = f"a voice says {DIGITS[d]}"  # lets music/sfx recipes wire up on the same shards
                rows.append(
                    {"id": path.stem, "audio": str(path), "text": DIGITS[d], "caption": caption}
                    | {"speaker": speaker, "split": split}
                )
    manifest = write_jsonl(root / "manifest.jsonl", rows)
    codec = load_codec("encodec_24khz", checkpoint=encodec_24k_checkpoint, bandwidth=1.5)
    tokenize_manifest(manifest, root / "tok", codec)
    train_sentencepiece([t for r in rows for t in (r["text"], r["caption"])], 40, root / "spm")
    return root / "tok", root / "spm"


@pytest.fixture(scope="session")
def digits_model(tmp_path_factory, digits_tokenized) -> Path:
    """A debug-size model trained for a few steps on every task over the digits shards, exported by
    `audiollm fit` (what AudioLM.from_pretrained reads)."""
    import yaml

    from audiollm.train.cli import fit_main

    tok, spm = digits_tokenized
    root = tmp_path_factory.mktemp("digits_model")
    config = {
        "kind": "lm",
        "seed_everything": 0,
        "model": {"preset": "debug", "lr": 3e-3, "warmup_steps": 2},
        "data": {
            "sources": [{"path": str(tok), "tasks": {"asr": 1.0, "tts": 1.0, "music": 0.5, "sfx": 0.5, "continue": 0.5}}],
            "tokenizer": str(spm), "max_len": 96, "prompt_seconds": 0.5, "token_budget": 768,
            "valid_batches": 0, "num_workers": 0,
        },
        "trainer": {"accelerator": "cpu", "max_steps": 4, "default_root_dir": str(root),
                    "enable_progress_bar": False, "limit_val_batches": 0},
        "checkpoint": {"dirpath": str(root / "checkpoints")},
    }  # fmt: skip
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    assert fit_main(["--config", str(root / "config.yaml")]) == 0
    return root / "model"


@pytest.fixture(scope="session")
def lm(digits_model, encodec_24k_checkpoint):
    """`AudioLM` over `digits_model`. Its checkpoint names its codec (encodec_24khz); offline, the weights
    come from the environment, as a user would supply them."""
    from audiollm import AudioLM

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AUDIOLLM_ENCODEC_CHECKPOINT", str(encodec_24k_checkpoint))
        yield AudioLM.from_pretrained(digits_model)
