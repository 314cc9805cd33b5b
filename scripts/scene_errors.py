"""Are wrong scenes in captions the user's habit rather than the image? A diagnostic for the captions issue.

    .venv/bin/python scripts/scene_errors.py --eval runs/demo-offline/eval-test.json --data runs/data-u12-p500-s0

Reads the best caption of each post from the JSON that `uapt evaluate --out` writes and the labels
from the dataset. Over the gradable posts it prints: how often the true scene is named,
how often another scene is, how often none is, what share of the wrong scenes are among
the user's three most frequent train scenes, how often the user's single most frequent
scene alone would be right (the prior), accuracy per true scene, and per user the
shares of captions naming the true scene, a wrong one, or none.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.data.dataset import load_posts  # noqa: E402
from model.evaluation.evaluate import read_best_captions  # noqa: E402
from model.evaluation.grounding import is_gradable, named_scenes  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eval", type=Path, required=True, help="a JSON file written by uapt evaluate --out")
    parser.add_argument("--data", type=Path, required=True, help="the dataset the evaluation was made on")
    args = parser.parse_args()

    captions = read_best_captions(args.eval)
    records = load_posts(args.data)
    counts: dict[str, Counter] = defaultdict(Counter)
    for r in records:
        if r.split == "train" and r.labels:
            counts[r.user_id][r.labels["scene"]] += 1
    habits = {user: [scene for scene, _ in c.most_common(3)] for user, c in counts.items()}  # most frequent first
    graded = [r for r in records if r.post_id in captions and is_gradable(r.labels)]
    if not graded:
        raise SystemExit("scene_errors: no gradable post of the evaluation is in the dataset")
    right, wrong, silent, wrong_habit, prior = 0, 0, 0, 0, 0
    per_scene: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    per_user: dict[str, Counter] = defaultdict(Counter)
    for r in graded:
        true, named = r.labels["scene"], named_scenes(captions[r.post_id])
        favourites = habits.get(r.user_id, [])
        hit, others = true in named, named - {true}
        right += hit
        silent += not named
        per_scene[true][0] += hit
        per_scene[true][1] += 1
        prior += favourites[:1] == [true]
        per_user[r.user_id]["right" if hit else "wrong" if others else "none"] += 1
        if others:
            wrong += 1
            wrong_habit += bool(others & set(favourites))
    n = len(graded)
    print(f"{n} gradable posts: true scene named {right / n:.3f}, a wrong scene {wrong / n:.3f}, none {silent / n:.3f}")
    print(f"wrong scenes among the user's 3 most frequent train scenes: {wrong_habit / max(wrong, 1):.3f}")
    print(f"the user's most frequent train scene alone would be right: {prior / n:.3f}")
    print("per true scene: " + ", ".join(f"{s} {ok / total:.2f} ({total})" for s, (ok, total) in sorted(per_scene.items())))
    print("per user, true / wrong / none: " + ", ".join(
        f"{user} {c['right'] / c.total():.2f} / {c['wrong'] / c.total():.2f} / {c['none'] / c.total():.2f}"
        for user, c in sorted(per_user.items())
    ))


if __name__ == "__main__":
    main()
