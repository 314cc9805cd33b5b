"""`uapt data import FORMAT`: other people's posts -> the project's dataset folder (docs/DATASET.md).

Formats: ``table`` (CSV, JSONL or Parquet of post_id, user_id, time, image, text[, split]),
``yfcc100m`` (the YFCC100M metadata TSV), ``csmn-instagram`` and ``csmn-yfcc`` (the JSON
layouts of Park et al. 2017, github.com/cesc-park/attend2u). Each source module turns its
input into `Candidate`s; `build` checks them, assigns splits, brings the images into the
folder (image URLs through `fetch`, under the worker's guards) and writes ``posts.jsonl``.
No row is dropped silently: every refused row is in ``import/bad_rows.jsonl`` with its
reason, and ``import/summary.json`` says rows read = imported + bad, with a count per reason.
"""
