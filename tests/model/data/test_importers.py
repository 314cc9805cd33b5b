"""`uapt data import` on small hand-made inputs of every format: good rows in, bad rows reported, counts add up."""

from __future__ import annotations

import csv
import io
import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from model.data.dataset import load_posts
from model.data.importers.build import ImportOptions, build_dataset
from model.data.importers.csmn import read_csmn_instagram, read_csmn_yfcc
from model.data.importers.table import read_table
from model.data.importers.yfcc100m import COLUMNS, read_yfcc100m
from model.image_policy import ImagePolicy


def png(colour=(200, 30, 30), size=(8, 6)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def read_report(out: Path) -> tuple[dict, list[dict]]:
    summary = json.loads((out / "import" / "summary.json").read_text())
    bad = [json.loads(line) for line in (out / "import" / "bad_rows.jsonl").read_text().splitlines()]
    assert summary["rows_read"] == summary["imported"] + summary["bad"] == summary["imported"] + len(bad)
    assert summary["bad_by_reason"] == dict(Counter(row["reason"] for row in bad))
    return summary, bad


# --- a generic table -------------------------------------------------------------------------

GOOD_ROWS = [  # user a: 7 posts (5 train, 1 val, 1 test by time); user b: 2 posts (both train)
    *[{"post_id": f"a{i}", "user_id": "a", "time": f"2020-01-0{i + 1}T10:00:00", "image": f"img/a{i}.png",
       "text": f"sunny day number {i}"} for i in range(7)],
    {"post_id": "b0", "user_id": "b", "time": 1600000000, "image": "img/b0.png", "text": "coffee time"},
    {"post_id": "b1", "user_id": "b", "time": 1600000100, "image": "img/b1.png", "text": "more coffee", "split": "test"},
]
BAD_ROWS = [  # one per reason, in the reason's order
    ({"post_id": "c0", "user_id": "c", "time": "yesterday", "image": "img/a0.png", "text": "x"}, "bad_time"),
    ({"post_id": "c1", "user_id": "", "time": 1, "image": "img/a0.png", "text": "x"}, "missing_field"),
    ({"post_id": "a0", "user_id": "a", "time": 1, "image": "img/a0.png", "text": "again"}, "duplicate_post_id"),
    ({"post_id": "c2", "user_id": "c", "time": 1, "image": "img/nope.png", "text": "x"}, "image_missing"),
    ({"post_id": "c3", "user_id": "c", "time": 1, "image": "img/notes.txt", "text": "x"}, "image_unreadable"),
    ({"post_id": "c4", "user_id": "c", "time": 1, "image": "img/a0.png", "text": "x", "split": "holdout"}, "bad_split"),
    ({"post_id": "c5", "user_id": "c", "time": 1, "image": "img/a0.png", "text": "   "}, "empty_text"),
]


@pytest.fixture
def table_dir(tmp_path: Path) -> Path:
    images = tmp_path / "in" / "img"
    images.mkdir(parents=True)
    for row in GOOD_ROWS:
        (tmp_path / "in" / row["image"]).write_bytes(png())
    (images / "notes.txt").write_text("not an image")
    return tmp_path / "in"


def write_table(folder: Path, kind: str) -> Path:
    rows = GOOD_ROWS + [row for row, _ in BAD_ROWS]
    columns = ["post_id", "user_id", "time", "image", "text", "split"]
    path = folder / f"posts.{kind}"
    if kind == "csv":
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, columns)
            writer.writeheader()
            writer.writerows(rows)
            handle.write("z9,z,1,img/a0.png,text,train,one cell too many\n")
    elif kind == "jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows) + "{not json\n")
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({c: [None if row.get(c) is None else str(row[c]) for row in rows] for c in columns})
        pq.write_table(table, path)
    return path


@pytest.mark.parametrize("kind", ["csv", "jsonl", "parquet"])
def test_a_table_imports_good_rows_and_reports_every_bad_one(table_dir: Path, tmp_path: Path, kind: str) -> None:
    out = tmp_path / "out"
    summary = build_dataset(read_table(write_table(table_dir, kind)), out, base=table_dir, options=ImportOptions())
    report, bad = read_report(out)
    assert summary.imported == len(GOOD_ROWS) == report["imported"]
    expected = Counter(reason for _, reason in BAD_ROWS)
    expected.update({"wrong_column_count": 1} if kind == "csv" else {"malformed_json": 1} if kind == "jsonl" else {})
    assert report["bad_by_reason"] == dict(expected)
    assert {row["post_id"] for row in bad if row["reason"] == "duplicate_post_id"} == {"a0"}
    posts = {p.post_id: p for p in load_posts(out)}
    assert set(posts) == {row["post_id"] for row in GOOD_ROWS}
    # user a by time: 5 oldest train, then val, then the newest test; b: its given test, the other train
    assert [posts[f"a{i}"].split for i in range(7)] == ["train"] * 5 + ["val", "test"]
    assert posts["b1"].split == "test" and posts["b0"].split == "train"
    assert posts["a3"].image.read_bytes() == (table_dir / "img" / "a3.png").read_bytes()


def test_the_three_table_formats_give_the_same_dataset(table_dir: Path, tmp_path: Path) -> None:
    written = []
    for kind in ("csv", "jsonl", "parquet"):
        out = tmp_path / kind
        build_dataset(read_table(write_table(table_dir, kind)), out, base=table_dir, options=ImportOptions())
        written.append((out / "posts.jsonl").read_text())
    assert written[0] == written[1] == written[2]


def test_the_hash_split_rule_ignores_row_order(table_dir: Path, tmp_path: Path) -> None:
    rows = [dict(row, split=None) for row in GOOD_ROWS]
    forward, backward = tmp_path / "f.jsonl", tmp_path / "b.jsonl"
    forward.write_text("".join(json.dumps(r) + "\n" for r in rows))
    backward.write_text("".join(json.dumps(r) + "\n" for r in reversed(rows)))
    options = ImportOptions(split_rule="hash")
    splits = []
    for path in (forward, backward):
        out = tmp_path / path.stem
        build_dataset(read_table(path), out, base=table_dir, options=options)
        splits.append({p.post_id: p.split for p in load_posts(out)})
    assert splits[0] == splits[1] and len(splits[0]) == len(rows)
    with pytest.raises(ValueError, match="split_rule"):
        ImportOptions(split_rule="random")


# --- image URLs, fetched under the guards ----------------------------------------------------------


class ImageServer:
    """A local HTTP server with a fixed set of paths; counts the requests it answers."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files, self.requests = files, Counter()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                owner.requests[self.path] += 1
                body = owner.files.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def image_server():
    server = ImageServer({
        "/p1.png": png((10, 10, 200)),
        "/p2.png": png((10, 200, 10)),
        "/p3.png": png((200, 200, 10)),
        "/big.png": png(size=(400, 400)) + b"\0" * 60_000,  # over the byte limit below
        "/text.png": b"this is not an image",
    })
    yield server
    server.server.shutdown()


def yfcc_line(photo_id: str, user: str, url: str, *, title="a+walk+by+the+sea", description="", marker="0",
              date="2012-02-16 09:56:37.0", prefixed=False) -> str:
    row = dict.fromkeys(COLUMNS, "")
    row.update(photo_id=photo_id, user_nsid=user, date_taken=date, title=title, description=description,
               download_url=url, marker=marker, user_tags="sea,summer+holiday")
    cells = [row[c] for c in COLUMNS]
    if prefixed:  # the Multimedia Commons copy: line number and photo hash first
        cells = ["7", cells[0], "0123abcd"] + cells[1:]
    return "\t".join(cells) + "\n"


def test_yfcc100m_tsv_fetches_urls_under_the_guards_and_resumes(tmp_path: Path, image_server: ImageServer) -> None:
    base = image_server.url
    tsv = tmp_path / "yfcc100m_dataset"
    tsv.write_text("".join([
        yfcc_line("1", "u1@N00", f"{base}/p1.png", date="2012-02-16 09:56:37.0"),
        yfcc_line("2", "u1@N00", f"{base}/p2.png", date="2012-02-17 09:56:37.0", prefixed=True),
        yfcc_line("3", "u1@N00", f"{base}/p3.png", date="2012-02-18 09:56:37.0",
                  title="IMG_0520", description="Sunset+over+the+%3Cb%3Ebay%3C%2Fb%3E+tonight"),
        yfcc_line("4", "u2@N00", f"{base}/big.png"),
        yfcc_line("5", "u2@N00", f"{base}/text.png"),
        yfcc_line("6", "u2@N00", f"{base}/missing.png"),
        yfcc_line("7", "u2@N00", "http://10.1.2.3/private.png"),  # a private address, not allow-listed
        yfcc_line("8", "u2@N00", "ftp://example.org/x.png"),
        yfcc_line("9", "u2@N00", f"{base}/p1.png", marker="1"),
        yfcc_line("10", "u2@N00", f"{base}/p1.png", title="", description=""),
        "too\tfew\tcells\n",
    ]))
    policy = ImagePolicy(allow=("127.0.0.1",), max_bytes=50_000, read_timeout_s=5.0)
    options = ImportOptions(shard_size=2, workers=3, policy=policy)
    out = tmp_path / "out"
    summary = build_dataset(read_yfcc100m(tsv), out, base=tmp_path, options=options)
    report, bad = read_report(out)
    assert summary.imported == 3
    assert report["bad_by_reason"] == {"image_refused": 3, "image_decode": 1, "image_fetch": 1, "video": 1,
                                       "empty_text": 1, "wrong_column_count": 1}
    reasons = {row["post_id"]: (row["reason"], row["detail"]) for row in bad}
    assert reasons["4"][0] == "image_refused" and "byte limit" in reasons["4"][1]
    assert reasons["7"][0] == "image_refused" and "10.1.2.3" in reasons["7"][1]
    assert reasons["8"][0] == "image_refused" and "scheme" in reasons["8"][1]
    assert image_server.requests["/private.png"] == 0
    posts = {p.post_id: p for p in load_posts(out)}
    assert posts["3"].text == "Sunset over the bay tonight"  # title of one word: the description, decoded
    assert posts["1"].text == "a walk by the sea"
    assert posts["2"].image.read_bytes() == image_server.files["/p2.png"]
    # the shards: webdataset layout, every image of a finished shard inside
    import webdataset

    keys = [sample["__key__"] for sample in webdataset.WebDataset(str(out / "shards" / "00000.tar"), shardshuffle=False)]
    assert len(keys) == 2
    # a rerun fetches nothing again and writes the same dataset; a half-written shard is fetched again
    first = (out / "posts.jsonl").read_bytes()
    before = sum(image_server.requests.values())
    build_dataset(read_yfcc100m(tsv), out, base=tmp_path, options=options)
    assert sum(image_server.requests.values()) == before
    assert (out / "posts.jsonl").read_bytes() == first
    (out / "shards" / "00001.json").unlink()
    build_dataset(read_yfcc100m(tsv), out, base=tmp_path, options=options)
    assert image_server.requests["/p3.png"] == 2 and image_server.requests["/p1.png"] == 1
    assert (out / "posts.jsonl").read_bytes() == first


# --- the CSMN layouts ------------------------------------------------------------------------------


def test_csmn_instagram_maps_their_files_to_splits(tmp_path: Path) -> None:
    root = tmp_path / "insta"
    (root / "json").mkdir(parents=True)
    (root / "images").mkdir()
    files = {
        "train": {"u1": {"p1": {"caption": "first #beach post"}, "p2": {"caption": ["list", "caption"]},
                         "p3": {"caption": ""}}, "u2": ["not", "a", "dict"]},
        "test1": {"u1": {"p4": {"caption": "a test post"}, "p5": {"caption": "no image here"}}},
        "test2": {"u1": {"p6": {"caption": "a second test post"}}},
    }
    for name, users in files.items():
        (root / "json" / f"insta-caption-{name}.json").write_text(json.dumps(users))
    for post in ("p1", "p2", "p3", "p4", "p6"):
        (root / "images" / f"u1_@_{post}").write_bytes(png())
    out = tmp_path / "out"
    build_dataset(read_csmn_instagram(root), out, base=root, options=ImportOptions())
    report, bad = read_report(out)
    assert report["bad_by_reason"] == {"empty_text": 1, "malformed_json": 1, "image_missing": 1}
    posts = {p.post_id: p for p in load_posts(out)}
    assert {k: p.split for k, p in posts.items()} == {"p1": "train", "p2": "train", "p4": "test", "p6": "val"}
    assert posts["p2"].text == "list caption"
    lines = [json.loads(line) for line in (out / "posts.jsonl").read_text().splitlines()]
    assert {line["post_id"]: line["source_split"] for line in lines}["p6"] == "test2"


def test_csmn_yfcc_takes_post_ids_from_page_urls(tmp_path: Path) -> None:
    root = tmp_path / "yfcc"
    (root / "json").mkdir(parents=True)
    (root / "images").mkdir()
    def post(pid, title, description=""):
        return {"title": title, "description": description, "page url": f"http://www.flickr.com/photos/u1/{pid}/"}
    train = {"u1": [post(str(i), f"a+day+at+the+lake+{i}") for i in range(40)] + [{"title": "no url"}]}
    test = {"u1": [post("900", "x", "Snow+on+the+hills+again")]}
    (root / "json" / "yfcc-caption-train.json").write_text(json.dumps(train))
    (root / "json" / "yfcc-caption-test.json").write_text(json.dumps(test))
    for pid in [*map(str, range(40)), "900"]:
        (root / "images" / f"u1_{pid}").write_bytes(png())
    out = tmp_path / "out"
    summary = build_dataset(read_csmn_yfcc(root), out, base=root, options=ImportOptions())
    read_report(out)
    assert summary.bad_by_reason == {"missing_field": 1} and summary.imported == 41
    posts = {p.post_id: p for p in load_posts(out)}
    assert posts["900"].split == "test" and posts["900"].text == "Snow on the hills again"
    assert summary.splits["val"] >= 1 and summary.splits["train"] >= 30  # 5% of train, by hashed post id


def test_the_cli_imports_a_csv(table_dir: Path, tmp_path: Path, capsys) -> None:
    from cli.main import main

    out = tmp_path / "cli-out"
    with pytest.raises(SystemExit) as finished:
        main(["data", "import", "table", str(write_table(table_dir, "csv")), "--out", str(out)])
    assert finished.value.code == 0
    printed = capsys.readouterr().out
    assert f"imported {len(GOOD_ROWS)} of {len(GOOD_ROWS) + len(BAD_ROWS) + 1} rows" in printed
    with pytest.raises(SystemExit, match="not a file"):
        main(["data", "import", "yfcc100m", str(tmp_path / "absent.tsv"), "--out", str(out)])
