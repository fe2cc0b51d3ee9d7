"""audiollm: one decoder LM over text tokens and neural-codec audio codes.

Public names are re-exported lazily so `import audiollm` stays fast (no lightning, gradio
or librosa at import time).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_EXPORTS = {
    "load_codec": "audiollm.codecs",
    "AudioLM": "audiollm.api",
    "compose": "audiollm.compose",
}
__all__ = ["AudioLM", "__version__", "compose", "load_codec"]

if TYPE_CHECKING:
    from audiollm.api import AudioLM
    from audiollm.codecs import load_codec
    from audiollm.compose import compose


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'audiollm' has no attribute {name!r}")


# The first import of a subpackage binds it as an attribute of its parent, which would hide the function
# `compose` behind the package `audiollm.compose`. So that first import happens here (the package is light
# until a name is used), and its binding is dropped: `audiollm.compose` is the function in any import order.
import_module("audiollm.compose")
del globals()["compose"]
