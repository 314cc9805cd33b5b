"""Scoring checkpoints: the paper's caption metrics, grounding and sameness checks, and the HTML report."""
