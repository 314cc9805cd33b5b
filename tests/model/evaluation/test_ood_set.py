"""The folder of images the demo model should refuse: reproducible, and free of the generator's own photographs."""

from __future__ import annotations

from pathlib import Path

from model.evaluation.ood_set import GENERATOR_PICTURES, read_kinds, write_ood_set


def test_the_ood_set_is_the_same_twice_and_holds_no_generator_photo(tmp_path: Path) -> None:
    empty = tmp_path / "no-wallpapers"  # the wallpapers depend on a Debian package; the rest must not
    first, second = write_ood_set(tmp_path / "a", wallpapers=empty), write_ood_set(tmp_path / "b", wallpapers=empty)
    assert first == second == read_kinds(tmp_path / "a")
    for name in first:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert not any(name.removeprefix("skimage-").removesuffix(".png") in GENERATOR_PICTURES for name in first)
    kinds = list(first.values())
    assert {kind: kinds.count(kind) for kind in ("blank", "solid", "noise", "text")} == {"blank": 2, "solid": 6, "noise": 3, "text": 3}
    assert kinds.count("photo") >= 20 and "wallpaper" not in kinds
