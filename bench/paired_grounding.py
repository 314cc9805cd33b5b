"""Comparison: which captions a change fixed and which it broke, post by post.

    .venv/bin/python -m bench.paired_grounding BEFORE.json AFTER.json --data runs/data-u12-p500-s0

BEFORE and AFTER are `uapt evaluate --out` files of the same posts (the baseline and
the change), DATA the dataset they were made on, whose `labels` say what each image
shows. Each post's best caption is checked on both sides with the checks behind
`uapt evaluate`'s grounding figures (`model.evaluation.grounding`): does it name the
true scene and the main object (gradable posts), does it name a wrong scene (posts
with a scene label). A share moving by a few points can be noise; the posts that
flipped each way, and McNemar's z for them, say whether the same posts moved one way
(|z| above 2 is unlikely by chance). Both sides' shares are printed beside the flips.
The last line is machine-readable:

    scene_gained=N scene_lost=N object_gained=N object_lost=N wrong_gained=N wrong_lost=N unchanged=N scene_z=Z
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model.data.dataset import DatasetError, load_posts
from model.evaluation.evaluate import read_best_captions
from model.evaluation.grounding import is_gradable, names_main_object, names_scene, names_wrong_scene

Labels = Mapping[str, Any] | None

# name, the figure of `uapt evaluate` it is, which posts it counts, the check on one caption
CHECKS: tuple[tuple[str, str, Callable[[Labels], bool], Callable[[str, Mapping[str, Any]], bool]], ...] = (
    ("scene", "content_scene", is_gradable, names_scene),
    ("object", "content_object", is_gradable, names_main_object),
    ("wrong", "wrong_scene_rate", lambda labels: bool(labels) and "scene" in labels, names_wrong_scene),
)


@dataclass(frozen=True)
class Flips:
    """One check over the posts it counts: how many pass on each side, and how many changed each way."""

    figure: str
    posts: int
    before: int
    after: int
    gained: int  # failed before, passes after
    lost: int  # passed before, fails after

    @property
    def z(self) -> float:
        """McNemar's z: the gained-lost difference in standard deviations of a coin flip over the changed posts."""
        changed = self.gained + self.lost
        return (self.gained - self.lost) / math.sqrt(changed) if changed else 0.0


def compare(before: Mapping[str, str], after: Mapping[str, str], labels: Mapping[str, Labels]) -> tuple[dict[str, Flips], int]:
    """Per check, the flips between two sets of best captions (post_id -> caption); and the unchanged count."""
    if before.keys() != after.keys():
        missing = sorted(before.keys() ^ after.keys())
        raise ValueError(f"before and after cover different posts ({len(missing)} in one only, e.g. {missing[0]!r})")
    unknown = sorted(before.keys() - labels.keys())
    if unknown:
        raise ValueError(f"labels: {len(unknown)} evaluated posts are not in the dataset, e.g. {unknown[0]!r}")
    flips = {}
    for name, figure, counts, check in CHECKS:
        pairs = [(check(before[p], labels[p]), check(after[p], labels[p])) for p in sorted(before) if counts(labels[p])]
        flips[name] = Flips(
            figure=figure,
            posts=len(pairs),
            before=sum(was for was, _ in pairs),
            after=sum(now for _, now in pairs),
            gained=sum(now and not was for was, now in pairs),
            lost=sum(was and not now for was, now in pairs),
        )
    unchanged = sum(before[p] == after[p] for p in before)
    return flips, unchanged


def summary_line(flips: Mapping[str, Flips], unchanged: int) -> str:
    counts = " ".join(f"{name}_gained={f.gained} {name}_lost={f.lost}" for name, f in flips.items())
    return f"{counts} unchanged={unchanged} scene_z={flips['scene'].z:.2f}"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.paired_grounding", description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path, help="uapt evaluate --out JSON of the baseline")
    parser.add_argument("after", type=Path, help="uapt evaluate --out JSON of the change, same posts")
    parser.add_argument("--data", type=Path, required=True, help="the dataset both were made on (for its labels)")
    args = parser.parse_args(argv)
    try:
        labels = {r.post_id: r.labels for r in load_posts(args.data, require_images=False)}
        before, after = read_best_captions(args.before), read_best_captions(args.after)
        flips, unchanged = compare(before, after, labels)
    except (OSError, KeyError, ValueError, DatasetError) as exc:  # json's errors are ValueErrors
        parser.exit(2, f"bench.paired_grounding: {exc}\n")
    print(f"{len(before)} posts; {unchanged} best captions unchanged")
    print("| figure | posts | before | after | gained | lost | McNemar z |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for f in flips.values():
        print(
            f"| {f.figure} | {f.posts} | {f.before / max(f.posts, 1):.3f} | {f.after / max(f.posts, 1):.3f} "
            f"| {f.gained} | {f.lost} | {f.z:.2f} |"
        )
    print(summary_line(flips, unchanged))


if __name__ == "__main__":
    main()
