"""Recipes: a config.yaml and README.md each; a recipe that is a pipeline keeps its orchestration beside them.

A leaf beside `audiollm` (not installed): it imports the library, and only the `audiollm` command loads it,
lazily, by name (`audiollm quickstart` runs `recipes.quickstart.pipeline`).
"""
