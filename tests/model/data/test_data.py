import json
import shutil
from pathlib import Path

import pytest

from model.data.dataset import DatasetError, check_dataset, load_posts
from cli.main import main


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _lines(data: Path) -> list[str]:
    return (data / "posts.jsonl").read_text(encoding="utf-8").splitlines()


def _write(data: Path, lines: list[str]) -> None:
    (data / "posts.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_load_posts_resolves_images(small_dataset: Path) -> None:
    posts = load_posts(small_dataset)
    assert all(p.image.is_absolute() and p.image.is_file() for p in posts)
    assert {p.split for p in posts} == {"train", "val", "test"}


def test_check_reports_each_kind_of_bad_line(small_dataset: Path, tmp_path: Path) -> None:
    data = _copy(small_dataset, tmp_path / "d")
    lines = _lines(data)
    first = json.loads(lines[0])
    (data / first["image"]).unlink()  # line 1: missing image
    bad_split = json.loads(lines[1]) | {"split": "dev"}  # line 2
    duplicate = json.loads(lines[2]) | {"post_id": first["post_id"]}  # line 3
    lines[1:3] = [json.dumps(bad_split), json.dumps(duplicate)]
    lines[3] = lines[3][:-5]  # line 4: truncated JSON
    _write(data, lines)

    records, problems = check_dataset(data)
    by_line = {p.line: p.message for p in problems}
    assert "not found" in by_line[1]
    assert "split 'dev'" in by_line[2]
    assert "duplicate post_id" in by_line[3] and "line 1" in by_line[3]
    assert "malformed JSON" in by_line[4]
    assert len(records) == 60 - 4
    with pytest.raises(DatasetError, match="posts.jsonl:1"):
        load_posts(data)


def test_check_reports_unreadable_image_and_missing_field(small_dataset: Path, tmp_path: Path) -> None:
    data = _copy(small_dataset, tmp_path / "d")
    lines = _lines(data)
    (data / json.loads(lines[0])["image"]).write_bytes(b"not a png")
    lines[1] = json.dumps({k: v for k, v in json.loads(lines[1]).items() if k != "text"})
    lines[2] = json.dumps(json.loads(lines[2]) | {"image": "../outside.png"})
    _write(data, lines)
    _, problems = check_dataset(data)
    by_line = {p.line: p.message for p in problems}
    assert "not a readable image" in by_line[1]
    assert "'text'" in by_line[2]
    assert "inside the dataset folder" in by_line[3]


def test_cli_check_exit_codes(small_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as ok:
        main(["data", "check", str(small_dataset)])
    assert ok.value.code == 0
    data = _copy(small_dataset, tmp_path / "d")
    _write(data, _lines(data) + ["[1, 2]"])
    with pytest.raises(SystemExit) as bad:
        main(["data", "check", str(data)])
    assert bad.value.code == 1
    assert "posts.jsonl:61: expected a JSON object" in capsys.readouterr().out


def test_cli_stats_prints_table1(small_dataset: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["data", "stats", str(small_dataset), "--json"])
    stats = json.loads(capsys.readouterr().out)
    assert stats["posts"] == 60 and stats["users"] == 6 and stats["posts_per_user"] == 10
    assert 0 <= stats["inter_user_similarity"] < stats["intra_user_similarity"] <= 1
