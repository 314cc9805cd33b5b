"""Offline training of the prefix networks: the frozen-feature cache, the trainer, and Table 3 ablations."""
