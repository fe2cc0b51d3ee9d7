"""Gradio demos of audiollm: a leaf package beside `audiollm` that only the `audiollm demo` command loads."""
