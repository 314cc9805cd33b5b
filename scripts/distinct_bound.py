"""How distinct can one user's captions be? A diagnostic for the captions issue's distinct_per_user target.

    .venv/bin/python scripts/distinct_bound.py --data runs/data-u12-p500-s0 [--eval runs/demo-offline/eval-test.json]

distinct_per_user counts a user's different captions over their posts. A caption
that varies only with what it names can be no more distinct than the images are
in those terms, so this prints, for the split's posts, the distinct_per_user a
captioner would reach if its caption were fixed by each set of labels (scene and
object; plus the drawn shape; plus its colour), beside the references' own. With
--eval it also prints the best captions' distinct_per_user and how often they
name a shape or a colour, and how often that one is in the picture, against the
references.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.data.dataset import PostRecord, load_posts  # noqa: E402
from model.evaluation.evaluate import read_best_captions  # noqa: E402
from model.evaluation.grounding import is_gradable, named_colours, named_shapes  # noqa: E402
from model.evaluation.metrics import distinct_per_user  # noqa: E402

LABEL_SETS: dict[str, Callable[[dict], tuple]] = {
    "scene + object": lambda l: (l["scene"], l["objects"][0]),
    "scene + object + shape": lambda l: (l["scene"], *l["objects"]),
    "scene + object + shape + colour": lambda l: (l["scene"], *l["objects"], *l["colours"]),
}


def detail_line(name: str, captions: Sequence[str], labels: Sequence[dict]) -> str:
    """How often captions name a drawn shape / a colour, and how often the named one is in the picture."""
    parts = []
    for detail, named, truth in (
        ("shape", named_shapes, lambda l: set(l["objects"][1:])),
        ("colour", named_colours, lambda l: set(l["colours"])),
    ):
        hits = [bool(named(c) & truth(l)) for c, l in zip(captions, labels) if named(c)]
        right = f"{sum(hits) / len(hits):.2f} of them right" if hits else "none"
        parts.append(f"name a {detail} {len(hits) / len(captions):.2f} ({right})")
    return f"{name:>11}: " + ", ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the dataset folder")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"), help="split to read (default: test)")
    parser.add_argument("--eval", type=Path, default=None, help="a JSON file written by uapt evaluate --out on that split")
    args = parser.parse_args()

    records: list[PostRecord] = [r for r in load_posts(args.data) if r.split == args.split and r.labels]
    if not records:
        raise SystemExit(f"distinct_bound: no labelled {args.split} posts in {args.data}")
    users = [r.user_id for r in records]
    print(f"{len(records)} labelled {args.split} posts of {len(set(users))} users; distinct_per_user if the caption")
    for name, key in LABEL_SETS.items():
        print(f"  were fixed by {name}: {distinct_per_user([repr(key(r.labels)) for r in records], users):.3f}")
    print(f"  references (what the users wrote): {distinct_per_user([r.text for r in records], users):.3f}")
    if args.eval is None:
        return
    captions = read_best_captions(args.eval)
    scored = [r for r in records if r.post_id in captions]
    if not scored:
        raise SystemExit(f"distinct_bound: no post of {args.eval} is a labelled {args.split} post of {args.data}")
    print(f"best captions of {args.eval}: distinct_per_user "
          f"{distinct_per_user([captions[r.post_id] for r in scored], [r.user_id for r in scored]):.3f}")
    graded = [r for r in scored if is_gradable(r.labels)]
    if not graded:
        return
    print(f"over the {len(graded)} gradable posts, captions that")
    print(detail_line("the model", [captions[r.post_id] for r in graded], [r.labels for r in graded]))
    print(detail_line("the users", [r.text for r in graded], [r.labels for r in graded]))


if __name__ == "__main__":
    main()
