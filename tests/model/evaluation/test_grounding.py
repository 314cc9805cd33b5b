"""The grounded and sameness metrics on hand-made captions."""

from __future__ import annotations

import pytest

from model.evaluation.grounding import content_scores, named_colours, named_objects, named_scenes, named_shapes
from model.evaluation.metrics import distinct_per_user, repeat_ngram_rate, repeats_word_ngram

BEACH_CAT = {"scene": "beach", "objects": ["cat", "circle"], "colours": ["red"], "count": 2, "on_topic_user": True}
SNOW_ROCKET = {"scene": "snow", "objects": ["rocket", "star"], "colours": ["white"], "count": 1, "on_topic_user": True}
OFF_TOPIC = {**BEACH_CAT, "on_topic_user": False}


def test_scenes_and_objects_are_found_by_any_synonym_and_plural() -> None:
    assert named_scenes("my kitty by the seaside , two red balls") == {"beach"}
    assert named_objects("my kitty by the seaside") == {"cat"}
    assert named_scenes("Winter slopes and the DUNES") == {"snow", "desert"}
    assert named_objects("two motorbikes") == {"motorcycle"}
    assert named_scenes("monday mood : jazz") == set()


def test_drawn_shapes_and_colours_are_found_by_any_synonym_and_plural() -> None:
    assert named_shapes("two red balls and a kite") == {"circle", "triangle"}
    assert named_shapes("three purple boxes") == {"square"}  # the generator's "es" plural
    assert named_colours("two red balls and a Purple kite") == {"red", "purple"}
    assert named_shapes("my kitty by the seaside") == set()
    assert named_colours("golden hour") == set()


def test_content_scores_count_right_wrong_and_ungradable_posts() -> None:
    captions = ["cat at the shore", "a rocket in the desert", "kitty , jazz", "coffee by the sea"]
    labels = [BEACH_CAT, SNOW_ROCKET, OFF_TOPIC, None]
    scores = content_scores(captions, labels)
    assert scores["gradable_posts"] == 2  # the off-topic user's post and the unlabelled post are not graded
    assert scores["content_scene"] == pytest.approx(1 / 2)  # shore = beach; desert is not snow
    assert scores["content_object"] == pytest.approx(2 / 2)
    assert scores["wrong_scene_rate"] == pytest.approx(1 / 3)  # over the three labelled posts


def test_content_scores_without_labels_are_none() -> None:
    assert content_scores(["a cat"], [None])["content_scene"] is None


def test_repeated_word_trigrams() -> None:
    assert repeats_word_ngram("day 2023 #smarter #smarter #smarter #smarter")
    assert not repeats_word_ngram("one red ball and one red box")  # "one red" twice is a bigram
    assert repeats_word_ngram("one red ball and one red ball")
    assert repeat_ngram_rate(["a b c a b c", "a b c", "x y", "p q r s p q r"]) == pytest.approx(2 / 4)


def test_distinct_per_user_averages_over_users() -> None:
    captions = ["same", "same", "same", "a", "b"]
    users = ["u1", "u1", "u1", "u2", "u2"]
    assert distinct_per_user(captions, users) == pytest.approx((1 / 3 + 2 / 2) / 2)
