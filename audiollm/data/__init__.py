"""Data: manifests (JSONL records), tokenised shards, datasets, samplers, mixtures."""
