import hashlib
from pathlib import Path

import pytest

from model.data.dataset import DatasetError, load_posts
from model.data.stats import compute_stats
from model.data.synth import write_dataset


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    a = write_dataset(tmp_path / "a", users=3, posts_per_user=4, seed=11)
    b = write_dataset(tmp_path / "b", users=3, posts_per_user=4, seed=11)
    c = write_dataset(tmp_path / "c", users=3, posts_per_user=4, seed=12)
    assert (a / "posts.jsonl").read_bytes() == (b / "posts.jsonl").read_bytes()
    assert (a / "posts.jsonl").read_bytes() != (c / "posts.jsonl").read_bytes()
    for image in sorted((a / "images").iterdir()):
        assert image.read_bytes() == (b / "images" / image.name).read_bytes()


def test_drawing_only_some_splits_changes_nothing_else(tmp_path: Path) -> None:
    full = write_dataset(tmp_path / "full", users=3, posts_per_user=10, seed=11)
    part = write_dataset(tmp_path / "part", users=3, posts_per_user=10, seed=11, image_splits={"test"})
    assert (part / "posts.jsonl").read_bytes() == (full / "posts.jsonl").read_bytes()
    full_posts = load_posts(full)
    assert [p.post_id for p in load_posts(part, require_images=False)] == [p.post_id for p in full_posts]
    with pytest.raises(DatasetError, match="not found"):
        load_posts(part)
    test_images = {Path(p.image).name for p in full_posts if p.split == "test"}
    drawn = {image.name for image in (part / "images").iterdir()}
    assert drawn == test_images and len(drawn) == 6
    for name in drawn:
        assert (part / "images" / name).read_bytes() == (full / "images" / name).read_bytes()


def test_the_demo_checkpoints_data_is_unchanged(tmp_path: Path) -> None:
    """checkpoints/demo-offline knows these users only as this generator drew them; planning without drawing is enough."""
    data = write_dataset(tmp_path, users=12, posts_per_user=500, seed=0, image_splits=())
    digest = hashlib.sha256((data / "posts.jsonl").read_bytes()).hexdigest()
    assert digest == "bc7fd714fdff0bc16c08fb14c8262dd7d6fa6b28d40c74cee95f3505f66a5b1d"


def test_every_user_has_every_split(small_dataset: Path) -> None:
    posts = load_posts(small_dataset)
    assert len(posts) == 60
    for user in {p.user_id for p in posts}:
        assert {p.split for p in posts if p.user_id == user} == {"train", "val", "test"}


def test_users_write_in_styles_of_their_own(tmp_path: Path) -> None:
    stats = compute_stats(load_posts(write_dataset(tmp_path, users=12, posts_per_user=12, seed=3)))
    assert stats.posts == 144 and stats.users == 12
    assert stats.intra_user_similarity > 2 * stats.inter_user_similarity


def test_labels_describe_the_image_and_on_topic_captions_name_them(tmp_path: Path) -> None:
    from model.evaluation.grounding import names_main_object, names_scene
    from model.data.synth import PHOTO_OBJECTS, SCENES

    posts = load_posts(write_dataset(tmp_path, users=6, posts_per_user=15, seed=6))  # seed 6: one off-topic user
    assert all(p.labels is not None for p in posts)
    for post in posts:
        labels = post.labels
        assert labels["scene"] in SCENES and labels["objects"][0] in PHOTO_OBJECTS
        assert 1 <= labels["count"] <= 4 and len(labels["colours"]) == 1
    on_topic = [p for p in posts if p.labels["on_topic_user"]]
    named = [names_scene(p.text, p.labels) and names_main_object(p.text, p.labels) for p in on_topic]
    # on-topic users describe ~95% of their images; every on-topic template names scene and object
    assert sum(named) / len(named) > 0.8
    # the flag is the user's (one value on all of a user's posts), and both kinds of user are here
    flags: dict[str, set[bool]] = {}
    for post in posts:
        flags.setdefault(post.user_id, set()).add(post.labels["on_topic_user"])
    assert all(len(user_flags) == 1 for user_flags in flags.values())
    assert set().union(*flags.values()) == {True, False}
    # off-topic users describe about one image in five
    off_topic = [p for p in posts if not p.labels["on_topic_user"]]
    assert sum(names_scene(p.text, p.labels) and names_main_object(p.text, p.labels) for p in off_topic) / len(off_topic) < 0.5
