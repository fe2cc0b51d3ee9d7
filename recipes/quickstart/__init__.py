"""The quickstart recipe: config.yaml (the LM's training run) and pipeline.py (`audiollm quickstart`)."""
