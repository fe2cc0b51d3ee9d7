"""The `audiollm` command: thin wrappers over library functions. Heavy imports happen inside commands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence


def _tokenize(args: argparse.Namespace) -> int:
    from audiollm.data.shards import tokenize_manifest

    summary = tokenize_manifest(
        args.manifests,
        args.out,
        codec=args.codec,
        checkpoint=args.checkpoint,
        bandwidth=args.bandwidth,
        batch_seconds=args.batch_seconds,
        device=args.device,
    )
    print(summary.describe())
    return 0


def _add_tokenize(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tokenize", help="encode a manifest's audio into code shards")
    p.add_argument(
        "manifest", help="JSONL manifest (id, audio, optional text/caption/speaker/start/duration)"
    )
    p.add_argument(
        "--codec", required=True, help="codec name (encodec_24khz, encodec_48khz) or a saved codec dir"
    )
    p.add_argument("--checkpoint", help="local EnCodec checkpoint file (.th state dict)")
    p.add_argument(
        "--bandwidth", type=float, help="EnCodec bandwidth in kbps (chooses the number of codebooks)"
    )
    p.add_argument("--batch-seconds", type=float, default=80.0, help="audio per encoder batch (seconds)")
    p.add_argument("--device", default="cpu", help="torch device for the codec")
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


def _train_tokenizer(args: argparse.Namespace) -> int:
    from audiollm.data.manifest import read_manifest
    from audiollm.text import train_sentencepiece

    texts = [t for m in args.manifests for r in read_manifest(m) for t in (r.text, r.caption) if t]
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


# Each entry adds one subcommand; `fit` is handled before argparse (its own CLI parses the rest).
SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_tokenize,
    _add_convert,
    _add_prepare,
    _add_train_tokenizer,
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
