"""Does a caption name what its image shows? Word-level checks against a post's `labels`.

The synthetic generator (`model.data.synth`) owns the words: each scene and each
photographed object has synonyms, and no word names two of them. A caption
names a scene (or object) when one of its words is one of those synonyms
(plural "s" or "es" allowed). These checks are what `content_scene`, `content_object`
and `wrong_scene_rate` in `uapt evaluate` count, and what the trainer's
periodic probe reports. The drawn shapes and their colour are found the same
way, for diagnostics.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from model.data.synth import COLOURS, PHOTO_OBJECTS, SCENES, SHAPES

_WORD = re.compile(r"[a-z]+")

SCENE_WORDS: dict[str, str] = {word: scene for scene, (_, _, words) in SCENES.items() for word in words}
OBJECT_WORDS: dict[str, str] = {word: obj for obj, (_, words) in PHOTO_OBJECTS.items() for word in words}
SHAPE_WORDS: dict[str, str] = {word: shape for shape, words in SHAPES.items() for word in words}
COLOUR_WORDS: dict[str, str] = {colour: colour for colour in COLOURS}


def _named(caption: str, vocabulary: Mapping[str, str]) -> set[str]:
    found = set()
    for word in _WORD.findall(caption.lower()):
        if word in vocabulary:
            found.add(vocabulary[word])
        elif word.endswith("s") and word[:-1] in vocabulary:
            found.add(vocabulary[word[:-1]])
        elif word.endswith("es") and word[:-2] in vocabulary:  # the generator's plural of "box"
            found.add(vocabulary[word[:-2]])
    return found


def named_scenes(caption: str) -> set[str]:
    """The scenes a caption names, by any generator synonym."""
    return _named(caption, SCENE_WORDS)


def named_objects(caption: str) -> set[str]:
    """The photographed objects a caption names, by any generator synonym."""
    return _named(caption, OBJECT_WORDS)


def named_shapes(caption: str) -> set[str]:
    """The drawn shapes a caption names, by any generator synonym (the details beside the photo)."""
    return _named(caption, SHAPE_WORDS)


def named_colours(caption: str) -> set[str]:
    """The colour names a caption uses."""
    return _named(caption, COLOUR_WORDS)


def names_scene(caption: str, labels: Mapping[str, Any]) -> bool:
    return labels["scene"] in named_scenes(caption)


def names_wrong_scene(caption: str, labels: Mapping[str, Any]) -> bool:
    return bool(named_scenes(caption) - {labels["scene"]})


def names_main_object(caption: str, labels: Mapping[str, Any]) -> bool:
    """The main object is the first of `labels["objects"]` (the photographed one)."""
    return labels["objects"][0] in named_objects(caption)


def is_gradable(labels: Mapping[str, Any] | None) -> bool:
    """Grounding is scored on posts with labels whose user writes about their images."""
    return bool(labels) and bool(labels.get("on_topic_user", True)) and "scene" in labels


def content_scores(captions: Sequence[str], labels: Sequence[Mapping[str, Any] | None]) -> dict[str, float | None]:
    """content_scene, content_object (over gradable posts) and wrong_scene_rate (over labelled posts).

    A figure is None when no post qualifies (e.g. a dataset without labels).
    """
    gradable = [(c, l) for c, l in zip(captions, labels) if is_gradable(l)]
    labelled = [(c, l) for c, l in zip(captions, labels) if l and "scene" in l]

    def share(pairs: list, check) -> float | None:
        return sum(check(c, l) for c, l in pairs) / len(pairs) if pairs else None

    return {
        "content_scene": share(gradable, names_scene),
        "content_object": share(gradable, names_main_object),
        "wrong_scene_rate": share(labelled, names_wrong_scene),
        "gradable_posts": len(gradable),
    }
