"""`uapt db …` and `uapt profiles …` end to end, through the parser the package registers."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from profiles.cli import register
from profiles.database import head_revision
from profiles.store import ProfileStore
from profiles.urls import URL_ENV


def uapt(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="uapt")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def write_jsonl(path: Path, lines: list[str | bytes]) -> Path:
    path.write_bytes(b"".join((line if isinstance(line, bytes) else line.encode()) + b"\n" for line in lines))
    return path


def post_line(post_id: str, user_id: str, text: str) -> str:
    return json.dumps({"post_id": post_id, "user_id": user_id, "text": text, "image": {"url": "ignored"}})


def test_import_show_stats(store_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    posts = write_jsonl(
        tmp_path / "posts.jsonl",
        [
            post_line("p1", "u1", "Sunset sunset at the #beach 🌅"),
            "",
            post_line("p2", "u2", "beach volleyball"),
            post_line("p3", "u1", "sunset again"),
        ],
    )
    assert uapt("profiles", "import", str(posts), "--db", store_url, "--quiet", "--chunk-size", "2") == 0
    assert "imported 3 new posts from 3 lines" in capsys.readouterr().out
    assert uapt("profiles", "import", str(posts), "--db", store_url, "--quiet") == 0
    assert "imported 0 new posts" in capsys.readouterr().out

    assert uapt("profiles", "show", "u1", "-k", "1", "--db", store_url, "--json") == 0
    assert json.loads(capsys.readouterr().out) == [{"term": "sunset", "score": pytest.approx(3 * 1.4054651081081644)}]
    assert uapt("profiles", "show", "u1", "--db", store_url) == 0
    assert capsys.readouterr().out.split() == ["4.2164", "sunset", "1.0000", "beach"]

    assert uapt("profiles", "stats", "--db", store_url, "--json") == 0
    assert json.loads(capsys.readouterr().out) == {"users": 2, "posts": 3, "terms": 3}


def test_url_from_environment_and_flag_wins(
    store_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(URL_ENV, store_url)
    assert uapt("db", "upgrade") == 0
    assert uapt("profiles", "stats") == 0
    assert "posts: 0" in capsys.readouterr().out
    monkeypatch.setenv(URL_ENV, "postgresql://nobody@127.0.0.1:1/nowhere")
    assert uapt("profiles", "stats", "--db", store_url) == 0


def test_db_upgrade_downgrade_current(store_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert uapt("db", "upgrade", "--db", store_url) == 0
    assert uapt("db", "current", "--db", store_url) == 0
    assert f"{head_revision()} (head)" in capsys.readouterr().out
    assert uapt("db", "downgrade", "base", "--db", store_url) == 0
    assert "base (empty)" in capsys.readouterr().out
    with pytest.raises(SystemExit, match=r"uapt profiles stats: .*run 'uapt db upgrade'"):
        uapt("profiles", "stats", "--db", store_url)
    assert uapt("db", "upgrade", "--db", store_url) == 0


def test_import_skip_reports_line_numbers(
    store_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    posts = write_jsonl(
        tmp_path / "mixed.jsonl",
        [
            post_line("p1", "u1", "good one"),
            '{"post_id": "p2", "user_id": "u1", "text": "unterminated',
            b'{"post_id": "p3", "user_id": "u1", "text": "latin-1 \xe9"}',
            json.dumps({"user_id": "u1", "text": "no post id"}),
            post_line("p5", "u1", "x" * 1_000_000),
            post_line("p6", "u1", ""),
            "[1, 2]",
            post_line("p8", "u2", "good two"),
        ],
    )
    assert uapt("profiles", "import", str(posts), "--db", store_url, "--quiet", "--on-error", "skip") == 0
    assert "imported 2 new posts from 8 lines" in capsys.readouterr().out
    skipped = [record.getMessage() for record in caplog.records if "skipped" in record.getMessage()]
    assert [message.split(": ")[1] for message in skipped] == [f"line {n}" for n in range(2, 8)]
    for line, reason in [(2, "malformed JSON"), (3, "UTF-8"), (4, "post_id"), (5, "limit is"), (6, "empty")]:
        assert reason in skipped[line - 2]
    with ProfileStore(store_url, create=False) as store:
        assert store.stats().posts == 2


def test_import_stop_keeps_lines_before_the_bad_one(store_url: str, tmp_path: Path) -> None:
    posts = write_jsonl(
        tmp_path / "bad.jsonl",
        [post_line("p1", "u1", "alpha"), post_line("p2", "u1", "beta"), "{not json", post_line("p4", "u1", "gamma")],
    )
    with pytest.raises(SystemExit, match=r"bad.jsonl: line 3: malformed JSON.*stopped after importing 2 new posts"):
        uapt("profiles", "import", str(posts), "--db", store_url, "--quiet", "--chunk-size", "10")
    with ProfileStore(store_url, create=False) as store:
        assert store.stats().posts == 2
        assert {k.term for k in store.top_keywords(["u1"], 5)["u1"]} == {"alpha", "beta"}


def test_user_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no such file"):
        uapt("profiles", "import", str(tmp_path / "missing.jsonl"), "--db", f"sqlite:///{tmp_path / 'p.db'}")
    with pytest.raises(SystemExit, match="no profile database"):
        uapt("profiles", "stats", "--db", f"sqlite:///{tmp_path / 'missing.db'}")
    with pytest.raises(SystemExit, match="unavailable .*connection failed"):
        uapt("profiles", "stats", "--db", "postgresql://nobody@127.0.0.1:1/nowhere")
    with pytest.raises(SystemExit, match=r"uapt profiles stats: .*foo"):
        uapt("profiles", "stats", "--db", "foo://x")
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    assert uapt("db", "upgrade", "--db", empty) == 0
    with pytest.raises(SystemExit, match="user 'ghost' has no posts"):
        uapt("profiles", "show", "ghost", "--db", empty)


def test_forget(store_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    posts = write_jsonl(
        tmp_path / "posts.jsonl",
        [post_line("p1", "u1", "sunset beach"), post_line("p2", "u1", "beach dog"), post_line("p3", "u2", "beach")],
    )
    assert uapt("profiles", "import", str(posts), "--db", store_url, "--quiet") == 0
    capsys.readouterr()
    assert uapt("profiles", "forget", "u1", "--db", store_url) == 0
    assert capsys.readouterr().out.strip() == "forgot user 'u1': 2 posts and 3 terms erased"
    assert uapt("profiles", "forget", "u1", "--db", store_url) == 0
    assert capsys.readouterr().out.strip() == "user 'u1' has nothing in the store; nothing erased"
    assert uapt("profiles", "stats", "--db", store_url, "--json") == 0
    assert json.loads(capsys.readouterr().out) == {"users": 1, "posts": 1, "terms": 1}
    with pytest.raises(SystemExit, match=r"uapt profiles forget: user_id must be a non-empty string"):
        uapt("profiles", "forget", " ", "--db", store_url)
