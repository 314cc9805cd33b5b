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


@pytest.mark.parametrize(
    ("users", "posts_per_user", "digest"),
    [
        # what the generator wrote before the style space and held-out users existed
        (12, 5, "b8afd564cb69a08bca48296e1ee0ae63132b052edf42b0f565bc423f5a1759ff"),
        (3, 4, "93ba1c7c64acc29ad02eb05060de39aca435fad82bdb66dd5d661666e2ed5c02"),
    ],
)
def test_listed_users_keep_their_bytes(tmp_path: Path, users: int, posts_per_user: int, digest: str) -> None:
    data = write_dataset(tmp_path, users=users, posts_per_user=posts_per_user, seed=0, image_splits=())
    assert hashlib.sha256((data / "posts.jsonl").read_bytes()).hexdigest() == digest
    with_heldout = write_dataset(tmp_path / "h", users=users, posts_per_user=posts_per_user, seed=0,
                                 image_splits=(), heldout_users=4)
    assert hashlib.sha256((with_heldout / "posts.jsonl").read_bytes()).hexdigest() == digest


def test_heldout_users_are_a_dataset_of_their_own(tmp_path: Path) -> None:
    from model.data.synth import HELDOUT_DIR

    data = write_dataset(tmp_path, users=4, posts_per_user=7, seed=5, heldout_users=3)
    trained = load_posts(data)
    heldout = load_posts(data / HELDOUT_DIR)
    assert len({p.user_id for p in heldout}) == 3 and len(heldout) == 21
    assert not {p.user_id for p in heldout} & {p.user_id for p in trained}
    for user in {p.user_id for p in heldout}:  # their own history gives their keywords
        assert {p.split for p in heldout if p.user_id == user} == {"train", "val", "test"}
    with pytest.raises(DatasetError, match="heldout_users"):
        write_dataset(tmp_path / "bad", users=2, posts_per_user=3, seed=0, heldout_users=-1)


def test_many_users_draw_styles_of_their_own_from_the_space(tmp_path: Path) -> None:
    """Past the listed users, styles come from the space: hundreds of users rarely share one."""
    from model.data.synth import draw_user_style

    import random

    rng = random.Random(1)
    styles = [draw_user_style(rng, i, f"u{i}") for i in range(312)]
    drawn = styles[12:]
    assert len({(s.favourites, s.hashtags, s.sign_off) for s in drawn}) > 0.95 * len(drawn)
    assert len({f for s in drawn for f in s.favourites}) > 250
    stats = compute_stats(load_posts(write_dataset(tmp_path, users=60, posts_per_user=6, seed=2, image_splits=()),
                                     require_images=False))
    assert stats.users == 60 and stats.intra_user_similarity > 2 * stats.inter_user_similarity


def test_style_space_words_name_no_scene_object_or_shape() -> None:
    """Grounding reads scenes and objects from a caption's words; the space must not add any."""
    from model.data import synth
    from profiles import analyze

    grounded = {w for _, _, words in synth.SCENES.values() for w in words}
    grounded |= {w for _, words in synth.PHOTO_OBJECTS.values() for w in words}
    grounded |= {w for words in synth.SHAPES.values() for w in words} | set(synth.SCENES) | set(synth.PHOTO_OBJECTS)
    pools = (synth.STYLE_ADJECTIVES, synth.STYLE_NOUNS, synth.STYLE_TAG_WORDS, synth.STYLE_TOPICS,
             synth.STYLE_SIGN_OFF_OPENERS, synth.STYLE_SIGN_OFF_NAMES)
    words = {term for pool in pools for entry in pool for term in analyze(entry)}
    assert words and not words & grounded, words & grounded


def test_cli_synth_writes_heldout_users(tmp_path: Path, capsys) -> None:
    from cli.main import main

    with pytest.raises(SystemExit) as finished:
        main(["data", "synth", "--out", str(tmp_path), "--users", "2", "--posts-per-user", "3", "--heldout-users", "1"])
    assert finished.value.code == 0
    assert "3 posts by 1 held-out users" in capsys.readouterr().out
    assert {p.user_id for p in load_posts(tmp_path / "heldout")} == {"user2"}
