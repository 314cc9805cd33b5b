"""`uapt data synth|check|stats`: make, check and describe training datasets.

Also the arguments and the dataset loading that every offline command (train, evaluate, ablate,
the fit commands) shares. Handlers import their heavy modules lazily so `uapt --help` stays instant.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

DATA_FORMAT_HELP = (
    "A dataset is a folder with posts.jsonl (one JSON object per line: post_id, user_id, "
    "image = path relative to the folder, text, split = train|val|test) and the image files."
)
STATS_HELP = (
    "Prints the paper's Table 1 columns. words/post: mean whitespace-separated tokens per caption. "
    "intra-user similarity: mean TF-IDF cosine over pairs of captions by the same user; "
    "inter-user similarity: the same over pairs by different users (one TF-IDF document per "
    "caption, the profiles analyzer, L2-normalised rows)."
)



def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `uapt data` and its actions."""
    _register_data(subparsers)


def add_feature_store_arg(parser: argparse.ArgumentParser) -> None:
    """--feature-store, for the commands that train or caption from the posts' image features."""
    parser.add_argument(
        "--feature-store",
        type=Path,
        default=None,
        help="sharded store of the posts' image features, made for one backbone and refused by another "
        "(default: one per backbone inside --cache-dir)",
    )


def add_offline_args(parser: argparse.ArgumentParser, *, keywords: bool = True) -> None:
    """--data, --device, --cache-dir, and (for the commands that feed users' keywords to the model) --keywords."""
    parser.add_argument("--data", required=True, type=Path, help="dataset folder (see 'uapt data --help')")
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:N (default: auto)")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=Path("runs/feature-cache"),
        help="frozen-feature cache, keyed by backbone and input (default: runs/feature-cache)",
    )
    if not keywords:
        return
    parser.add_argument(
        "--keywords",
        type=int,
        default=None,
        help="top-k TF-IDF keywords per user as context (default: 5 when training; "
        "evaluate uses what the checkpoint was trained with)",
    )



def load_posts_or_exit(command: str, data_dir: Path):
    """The dataset's posts, or exit with one line naming the command and what is wrong."""
    from model.data.dataset import DatasetError, load_posts

    try:
        return load_posts(data_dir)
    except DatasetError as exc:
        raise SystemExit(f"uapt {command}: {exc}") from None


def _cmd_stats(args: argparse.Namespace) -> int:
    from model.data.stats import compute_stats

    stats = compute_stats(load_posts_or_exit("data stats", args.dir))
    print(json.dumps(stats.to_dict(), indent=2) if args.json else stats.markdown())
    return 0



def _register_data(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser(
        "data", help="make, check and describe training datasets", description=DATA_FORMAT_HELP
    )
    sub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    synth = sub.add_parser(
        "synth",
        help="write a seeded synthetic personalized dataset",
        description=(
            "Procedurally drawn images (scene, coloured objects, counts, positions) and users with "
            "writing styles of their own (synonyms, templates, emoji/hashtag habits, series, "
            "sign-offs; some mostly off-topic); the first 12 users from fixed lists, later users from "
            "a style space of composed phrases, hashtags and rates. Same arguments, same bytes. " + DATA_FORMAT_HELP
        ),
    )
    synth.add_argument("--out", required=True, type=Path, help="folder to write posts.jsonl and images/ into")
    synth.add_argument("--users", type=int, default=12, help="number of users (default: 12, the demo checkpoint's data)")
    synth.add_argument("--posts-per-user", type=int, default=500, help="posts per user (default: 500, the demo checkpoint's data)")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    synth.add_argument(
        "--heldout-users",
        type=int,
        default=0,
        help="also draw K users into OUT/heldout, a dataset training never sees, for "
        "'uapt evaluate --unseen-data OUT/heldout' (personalization_unseen; default: 0)",
    )
    synth.set_defaults(func=_cmd_synth)

    check = sub.add_parser("check", help="validate a dataset and list every bad line", description=DATA_FORMAT_HELP)
    check.add_argument("dir", type=Path, help="dataset folder")
    check.add_argument("--no-verify-images", action="store_true", help="only check that image files exist")
    check.set_defaults(func=_cmd_check)

    _register_import(sub)

    stats = sub.add_parser("stats", help="Table 1 statistics of a dataset", description=STATS_HELP)
    stats.add_argument("dir", type=Path, help="dataset folder")
    stats.add_argument("--json", action="store_true", help="print JSON instead of a markdown table")
    stats.set_defaults(func=_cmd_stats)


def _cmd_synth(args: argparse.Namespace) -> int:
    from model.data.synth import HELDOUT_DIR, write_dataset
    from model.errors import ModelError

    try:
        out = write_dataset(
            args.out,
            users=args.users,
            posts_per_user=args.posts_per_user,
            seed=args.seed,
            heldout_users=args.heldout_users,
        )
    except ModelError as exc:
        raise SystemExit(f"uapt data synth: {exc}") from None
    print(f"wrote {args.users * args.posts_per_user} posts by {args.users} users to {out}")
    if args.heldout_users:
        held = out / HELDOUT_DIR
        print(f"wrote {args.heldout_users * args.posts_per_user} posts by {args.heldout_users} held-out users to {held}")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from model.data.dataset import DatasetError, check_dataset

    try:
        records, problems = check_dataset(args.dir, verify_images=not args.no_verify_images)
    except DatasetError as exc:
        raise SystemExit(f"uapt data check: {exc}") from None
    for problem in problems:
        print(problem)
    print(f"{len(records)} good posts, {len(problems)} problems")
    return 1 if problems else 0


IMPORT_FORMATS = ("table", "yfcc100m", "csmn-instagram", "csmn-yfcc")


def _register_import(sub: argparse._SubParsersAction) -> None:
    from model.image_policy import ImagePolicy  # a dataclass, no Pillow: --help stays quick

    imp = sub.add_parser(
        "import",
        help="turn a table of posts, a YFCC100M metadata file or a CSMN dataset into a dataset folder",
        description=(
            "FORMAT: table (CSV, JSONL or Parquet with post_id, user_id, time, image, text[, split]), "
            "yfcc100m (the YFCC100M metadata TSV), csmn-instagram / csmn-yfcc (the folder of "
            "github.com/cesc-park/attend2u's json/ and images/). Image URLs are fetched into tar shards "
            "(webdataset layout) under the worker's image guards; a rerun resumes. Every row not imported "
            "is in OUT/import/bad_rows.jsonl with its reason; OUT/import/summary.json has the counts. "
            "docs/DATASET.md describes each format."
        ),
    )
    imp.add_argument("format", choices=IMPORT_FORMATS, help="input format")
    imp.add_argument("input", type=Path, help="the table or TSV file, or the CSMN folder")
    imp.add_argument("--out", required=True, type=Path, help="dataset folder to write (posts.jsonl, images/, shards/, import/)")
    imp.add_argument("--split-rule", choices=("time", "hash"), default="time",
                     help="where rows give no split: time (per user, newest ~15%% test, ~15%% before val) "
                     "or hash (of the post id: 70/15/15) (default: time)")
    imp.add_argument("--shard-size", type=int, default=1000, help="images per tar shard (default: 1000)")
    imp.add_argument("--workers", type=int, default=16, help="parallel downloads (default: 16)")
    imp.add_argument("--allow-hosts", default="", help="comma-separated hosts or networks the address guard lets through "
                     "(e.g. 127.0.0.1 for a local mirror; default: public addresses only)")
    imp.add_argument("--max-bytes", type=int, default=ImagePolicy.max_bytes, help=f"per image (default: {ImagePolicy.max_bytes})")
    imp.add_argument("--max-pixels", type=int, default=ImagePolicy.max_pixels, help=f"per image (default: {ImagePolicy.max_pixels})")
    imp.add_argument("--timeout", type=float, default=ImagePolicy.read_timeout_s,
                     help=f"wall-clock seconds per image, connect to last byte (default: {ImagePolicy.read_timeout_s})")
    imp.set_defaults(func=_cmd_import)


def _cmd_import(args: argparse.Namespace) -> int:
    from model.data.importers.build import ImportOptions, build_dataset
    from model.data.importers.csmn import read_csmn_instagram, read_csmn_yfcc
    from model.data.importers.table import read_table
    from model.data.importers.yfcc100m import read_yfcc100m
    from model.image_policy import ImagePolicy

    readers = {"table": read_table, "yfcc100m": read_yfcc100m, "csmn-instagram": read_csmn_instagram, "csmn-yfcc": read_csmn_yfcc}
    is_folder = args.format.startswith("csmn")
    if not (args.input.is_dir() if is_folder else args.input.is_file()):
        raise SystemExit(f"uapt data import: input {args.input} is not a {'folder' if is_folder else 'file'}")
    allow = tuple(part.strip() for part in args.allow_hosts.split(",") if part.strip())
    try:
        options = ImportOptions(
            split_rule=args.split_rule,
            shard_size=args.shard_size,
            workers=args.workers,
            policy=ImagePolicy(allow=allow, max_bytes=args.max_bytes, max_pixels=args.max_pixels, read_timeout_s=args.timeout),
        )
        base = args.input if is_folder else args.input.parent
        summary = build_dataset(readers[args.format](args.input), args.out, base=base, options=options)
    except ValueError as exc:
        raise SystemExit(f"uapt data import: {exc}") from None
    print(json.dumps(summary.to_dict(), indent=2))
    print(f"imported {summary.imported} of {summary.rows_read} rows into {args.out}; "
          f"{summary.bad} bad rows listed in {args.out / 'import' / 'bad_rows.jsonl'}")
    return 0
