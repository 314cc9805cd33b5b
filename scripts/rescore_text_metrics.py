"""Recompute the text metrics (BLEU, METEOR, ROUGE-L, CIDEr) of `uapt evaluate --out` JSON files from the captions they hold.

    .venv/bin/python scripts/rescore_text_metrics.py docs/results/*-eval-test*.json

Why: until f13e365 a caption holding a character the PTB tokenizer breaks lines at (a
vertical tab, a form feed, CR, U+2028) shifted every later caption onto another post's
reference, and the text metrics of that whole evaluation came out too low without an
error (`model.evaluation.metrics.one_line`). Each file's best captions are scored again
with the fix; the file is not changed. Prints, per file, how many best captions hold
whitespace other than a space and the stored and the rescored figures.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.evaluation.evaluate import read_best_captions  # noqa: E402
from model.evaluation.metrics import caption_metrics  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("evals", nargs="+", type=Path, help="JSON files written by uapt evaluate --out")
    args = parser.parse_args()
    for path in args.evals:
        report = json.loads(path.read_text(encoding="utf-8"))
        if not report.get("captions"):
            print(f"{path}: holds no captions, skipped")
            continue
        references = {c["post_id"]: c["reference"] for c in report["captions"]}
        best = read_best_captions(path)
        broken = sum(any(ch.isspace() and ch != " " for ch in text) for text in best.values())
        rescored = caption_metrics(references, best)
        stored = report["metrics"]
        figures = ", ".join(f"{name} {stored[name]:.4f} -> {rescored[name]:.4f}" for name in rescored)
        print(f"{path}: {broken} of {len(best)} best captions hold whitespace other than a space; {figures}")


if __name__ == "__main__":
    main()
