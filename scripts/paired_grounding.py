"""Which captions did a change fix, and which did it break? Paired grounding counts of two evaluations.

    .venv/bin/python scripts/paired_grounding.py --before docs/results/session8-visual3-eval-test.json \
        --after docs/results/session13-image-words-w2-eval-test.json --data runs/data-u12-p500-s0

Both JSON files are `uapt evaluate --out` reports on the same split. For each post the
best captions are compared with `model.evaluation.grounding`'s checks: how many gained
or lost the true scene and the main object (gradable posts), how many gained or lost a
wrong scene (labelled posts), and how many best captions are unchanged. A share moving
by a few points can be noise; these counts, with McNemar's z for the scene, say
whether the same posts moved one way.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.data.dataset import load_posts  # noqa: E402
from model.evaluation.evaluate import read_best_captions  # noqa: E402
from model.evaluation.grounding import is_gradable, names_main_object, names_scene, names_wrong_scene  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="uapt evaluate JSON of the baseline")
    parser.add_argument("--after", type=Path, required=True, help="uapt evaluate JSON of the change, same split")
    parser.add_argument("--data", type=Path, required=True, help="the dataset both were made on")
    args = parser.parse_args()
    labels = {r.post_id: r.labels for r in load_posts(args.data)}
    before, after = read_best_captions(args.before), read_best_captions(args.after)
    if before.keys() != after.keys():
        raise SystemExit("paired_grounding: the two reports do not cover the same posts")
    counts = dict.fromkeys(
        ("unchanged", "scene_gained", "scene_lost", "object_gained", "object_lost", "wrong_gained", "wrong_lost"), 0
    )
    for post_id, old in before.items():
        new, label = after[post_id], labels[post_id]
        counts["unchanged"] += old == new
        checks = [("wrong", names_wrong_scene)] if label and "scene" in label else []
        if is_gradable(label):
            checks += [("scene", names_scene), ("object", names_main_object)]
        for name, check in checks:
            was, now = check(old, label), check(new, label)
            counts[f"{name}_gained"] += now and not was
            counts[f"{name}_lost"] += was and not now
    moved = counts["scene_gained"] + counts["scene_lost"]
    z = (counts["scene_gained"] - counts["scene_lost"]) / math.sqrt(moved) if moved else 0.0
    print(json.dumps({"posts": len(before), **counts, "scene_mcnemar_z": round(z, 2)}, indent=1))


if __name__ == "__main__":
    main()
