"""Evaluation: ASR error rates, TTS intelligibility (pocketsphinx judge), codec quality beside Opus, and
music / sound statistics; `suite.evaluate` is what `audiollm eval` runs."""
