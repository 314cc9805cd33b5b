"""`uapt evaluate`: score a checkpoint on a split of a dataset.

The evaluation options are shared with `uapt ablate`, which scores every variant the same way.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from model.cli import add_decoding_args, add_serving_dtype_arg, decoding_from_args
from model.data.cli import add_feature_store_arg, add_offline_args, load_posts_or_exit


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the evaluate subcommand."""
    _register_evaluate(subparsers)


def eval_options(args: argparse.Namespace):
    """The decoding and scoring options of `evaluate` and `ablate` (see add_eval_args)."""
    from model.evaluation.evaluate import EvalOptions

    return EvalOptions(
        split=args.split,
        decoding=decoding_from_args(args),
        limit=args.limit,
        keywords_k=args.keywords,
        cold_start=args.cold_start,
    )


def add_eval_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--split", default="test", choices=("train", "val", "test"), help="split to score (default: test)")
    add_decoding_args(parser)
    parser.add_argument("--limit", type=int, default=None, help="score only the first N posts of the split")
    parser.add_argument(
        "--cold-start",
        action="store_true",
        help="caption every post as if its user were new (no keywords): how far the image alone carries the captions",
    )


def _register_evaluate(subparsers: argparse._SubParsersAction) -> None:
    evaluate = subparsers.add_parser(
        "evaluate",
        help="score a checkpoint: BLEU, METEOR, ROUGE-L, CIDEr, personalization",
        description=(
            "Generates one caption per post of the split and scores it against the post's own text "
            "(one reference, as in the paper) with pycocoevalcap (needs Java). Personalization: the "
            "share of generated captions whose nearest user by TF-IDF writing style (cosine to each "
            "user's train-split profile) is the poster; the same for the real captions is the ceiling."
        ),
    )
    add_offline_args(evaluate)
    add_feature_store_arg(evaluate)
    add_eval_args(evaluate)
    evaluate.add_argument("--checkpoint", required=True, type=Path, help="checkpoint folder from 'uapt train'")
    add_serving_dtype_arg(evaluate)
    evaluate.add_argument(
        "--unseen-data",
        type=Path,
        default=None,
        help="a dataset of users the checkpoint never trained on (e.g. 'uapt data synth --heldout-users' "
        "OUT/heldout): also report personalization_unseen on its split (chance: 1 / unseen_users)",
    )
    evaluate.add_argument("--out", type=Path, default=None, help="write the JSON report here (default: CHECKPOINT/eval-SPLIT.json)")
    evaluate.add_argument(
        "--report",
        type=Path,
        default=None,
        help="also write one self-contained HTML page: every image with its user, keywords, real text and n-best captions",
    )
    evaluate.add_argument(
        "--ood-dir", type=Path, default=None,
        help="a folder of images the model should refuse (python -m model.evaluation.ood_set --out DIR writes one): "
        "adds ood_auroc and ood_fpr95 against the split's images, and how many of them are abstained "
        "(needs a checkpoint with an OOD file, uapt fit-ood)",
    )
    evaluate.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from model.errors import ModelError
    from model.evaluation.evaluate import evaluate_checkpoint

    records = load_posts_or_exit("evaluate", args.data)
    unseen = None if args.unseen_data is None else load_posts_or_exit("evaluate", args.unseen_data)
    try:
        options = eval_options(args)
        report = evaluate_checkpoint(
            records, args.checkpoint, options=options, cache_dir=args.cache_dir,
            feature_store=args.feature_store, device=args.device, serving_dtype=args.serving_dtype,
            report_path=args.report, unseen_records=unseen, ood_dir=args.ood_dir,
        )
    except ModelError as exc:
        raise SystemExit(f"uapt evaluate: {exc}") from None
    out = args.out or args.checkpoint / f"eval-{args.split}.json"
    out.write_text(json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(report.markdown())
    print(f"report: {out}" + (f", page: {args.report}" if args.report else ""), file=sys.stderr)
    return 0
