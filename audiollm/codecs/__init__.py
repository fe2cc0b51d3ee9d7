"""Audio tokenizers behind one contract (`Codec`) and one loader (`load_codec`).

Names: `encodec_24khz`, `encodec_48khz` (the encodec package's pretrained models), or a
directory written by `save_pretrained` (its `config.json` says which implementation it is).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from audiollm.codecs.base import Codec, CodecError, bitrate

__all__ = ["PRETRAINED", "Codec", "CodecError", "bitrate", "load_codec"]

PRETRAINED = ("encodec_24khz", "encodec_48khz")


def load_codec(name_or_dir: str | Path, **options: Any) -> Codec:
    """Load a codec by name or from a saved directory.

    options for EnCodec: `bandwidth` (kbps), `checkpoint` (path to the published .th state dict),
    `device`. For a saved native codec: `device`.
    """
    name = str(name_or_dir)
    if name in PRETRAINED:
        from audiollm.codecs.encodec import EncodecCodec

        return EncodecCodec.from_name(name, **options)
    directory = Path(name)
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise CodecError(
            f"unknown codec '{name}': not one of {', '.join(PRETRAINED)} and not a directory "
            "with config.json (written by save_pretrained)"
        )
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as e:
        raise CodecError(f"{config_path}: not valid JSON ({e.msg})") from None
    kind = config.get("codec_type")
    if kind == "encodec":
        from audiollm.codecs.encodec import EncodecCodec

        return EncodecCodec.from_pretrained(directory, **options)
    if kind == "native":
        from audiollm.codecs.native import NativeCodec

        return NativeCodec.from_pretrained(directory, **options)
    raise CodecError(f"{config_path}: field 'codec_type' must be 'encodec' or 'native', got {kind!r}")
