"""Evaluation: codec quality metrics (more arrive with later issues)."""
