"""Training data: the JSONL dataset format, records to samples with keywords, synthetic users, statistics."""
