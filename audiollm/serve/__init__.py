"""`audiollm serve`: OpenAI-compatible audio endpoints over a continuous-batching scheduler.

The only part of audiollm that imports fastapi (in `audiollm.serve.app`, loaded when a server is made);
`ServeConfig` here is light, so the CLI can build its flags without it.
"""

from audiollm.serve.config import ServeConfig, add_arguments, from_args

__all__ = ["ServeConfig", "add_arguments", "from_args"]
