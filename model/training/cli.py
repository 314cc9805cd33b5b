"""`uapt train` and `uapt ablate`: train the prefix networks, alone or as the paper's Table 3.

Handlers import torch and friends lazily so `uapt --help` stays instant; errors a user can cause
(`ModelError`) end in one clear line, and any other exception is a bug that keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from model.data.cli import add_feature_store_arg, add_offline_args, load_posts_or_exit
from model.evaluation.cli import add_eval_args, eval_options
from model.training.stop import EXIT_STOPPED


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the train and ablate subcommands."""
    _register_train(subparsers)
    _register_ablate(subparsers)


def _add_training_args(parser: argparse.ArgumentParser) -> None:
    from model.training.train_config import TrainConfig

    d = TrainConfig()
    parser.add_argument("--preset", default="offline", help="model preset: paper, offline, tiny (default: offline)")
    parser.add_argument("--epochs", type=int, default=d.epochs, help=f"epochs (default: {d.epochs}, paper)")
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help=f"batch size (default: {d.batch_size}, paper)")
    parser.add_argument("--lr", type=float, default=d.lr, help=f"peak learning rate (default: {d.lr}, paper)")
    parser.add_argument(
        "--warmup-steps",
        type=int,
        default=None,
        help="linear warm-up steps before cosine decay (default: 5%% of all steps, at most the paper's 6000)",
    )
    parser.add_argument(
        "--weight-decay", type=float, default=d.weight_decay, help=f"AdamW weight decay (default: {d.weight_decay}, paper)"
    )
    parser.add_argument(
        "--betas", type=float, nargs=2, default=d.betas, metavar=("B1", "B2"), help="AdamW betas (default: 0.9 0.96, paper)"
    )
    parser.add_argument("--seed", type=int, default=d.seed, help=f"seed of each epoch's shuffle (default: {d.seed})")
    parser.add_argument("--max-steps", type=int, default=None, help="stop (and checkpoint) after this many steps in total")
    parser.add_argument(
        "--eval-every",
        type=int,
        default=None,
        help="steps between val checks (val loss plus a greedy grounding probe) and checkpoints (default: once per epoch)",
    )
    parser.add_argument(
        "--probe-posts", type=int, default=d.probe_posts,
        help=f"val posts captioned greedily at each check to measure grounding; 0 turns it off (default: {d.probe_posts})",
    )
    parser.add_argument(
        "--max-grad-norm",
        type=float,
        default=d.max_grad_norm,
        help=f"clip the global gradient norm to this; 0 turns clipping off (default: {d.max_grad_norm})",
    )
    parser.add_argument(
        "--context-dropout",
        type=float,
        default=d.context_dropout,
        help="share of training rows that see a new user's empty profile instead of their own keywords, "
        "so scene and object must be learned from the image; not in the paper "
        f"(default: {d.context_dropout}, off)",
    )
    parser.add_argument(
        "--visual-lr-scale",
        type=float,
        default=d.visual_lr_scale,
        help="peak lr of the image path (visual projection, mapping network, global image term) relative to --lr; "
        f"not in the paper (default: {d.visual_lr_scale}, the same lr everywhere)",
    )
    parser.add_argument(
        "--precision",
        default=d.precision,
        choices=("auto", "float32", "bfloat16"),
        help="dtype of the frozen LM while training: auto picks bfloat16 on CUDA, float32 on an AVX2-only CPU "
        "(where bf16 is several times slower), and on a CPU with AVX512-BF16/AMX times both on the first batch "
        "(about 20 s on a 2-core CPU) and keeps the faster, which differs from one such CPU to the next; "
        "the trained weights stay float32. Which dtype learns more per step is not settled: one run each favoured "
        "float32, a second float32 run on another CPU did not (docs/RESULTS.md)",
    )


def _train_config(args: argparse.Namespace, **train_only):
    """The TrainConfig of the options `train` and `ablate` share, plus `train_only` settings."""
    from model.training.train_config import TrainConfig

    keywords = {} if args.keywords is None else {"keywords_k": args.keywords}
    return TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup_steps=args.warmup_steps,
        weight_decay=args.weight_decay,
        betas=tuple(args.betas),
        seed=args.seed,
        max_steps=args.max_steps,
        eval_every=args.eval_every,
        probe_posts=args.probe_posts,
        precision=args.precision,
        max_grad_norm=args.max_grad_norm if args.max_grad_norm > 0 else None,
        context_dropout=args.context_dropout,
        visual_lr_scale=args.visual_lr_scale,
        **keywords,
        **train_only,
    )


def _register_train(subparsers: argparse._SubParsersAction) -> None:
    from model.training.train_config import IMAGE_WORD_MIN_GAIN, TrainConfig

    d = TrainConfig()
    train = subparsers.add_parser(
        "train",
        help="train the prefix networks on a dataset (backbones frozen)",
        description=(
            "Trains the mapping and fusion networks (and queries) with the paper's AdamW + warm-up + "
            "cosine schedule. Frozen image and context features are cached on disk. Keywords of a "
            "train post come from the user's other train posts only. Writes a checkpoint, "
            "metrics.json and curve.png into --out, and checkpoints every epoch for --resume. SIGTERM or "
            f"Ctrl-C saves the exact state at the end of the current step and exits with status {EXIT_STOPPED}; "
            "--resume continues the run as if unbroken. A second signal stops at once."
        ),
    )
    add_offline_args(train)
    add_feature_store_arg(train)
    _add_training_args(train)
    train.add_argument("--ablation", default=None, help="no_context, no_mapping, no_fusion or no_query")
    train.add_argument(
        "--init-seed", type=int, default=None, help="seed of the initial prefix weights (default: the preset's, 0)"
    )
    train.add_argument("--out", required=True, type=Path, help="checkpoint folder to write")
    train.add_argument("--resume", type=Path, default=None, help="checkpoint folder to resume from (e.g. the same --out)")
    train.add_argument(
        "--init-from",
        type=Path,
        default=None,
        help="start from this trained checkpoint's weights with a new optimizer and schedule (a second stage); "
        "unlike --resume it does not continue the old run",
    )
    train.add_argument(
        "--image-word-loss-weight",
        type=float,
        default=d.image_word_loss_weight,
        help="count the tokens of the words the image predicts this many times in the training loss, so that the "
        "few tokens only the image can tell (scene, object) weigh more against the user's style; the words are "
        "those of the image-word tagger of --image-words-from (default: of --init-from) whose val cross-entropy is at least "
        f"{IMAGE_WORD_MIN_GAIN * 100:g}%% below their prior's. Val loss stays the plain mean. Not in the paper "
        f"(default: {d.image_word_loss_weight}, off; docs/RESULTS.md)",
    )
    train.add_argument(
        "--image-words-from",
        type=Path,
        default=None,
        help="checkpoint (or any folder holding a fitted tagger's two files) whose image-word "
        "tagger (uapt fit-image-words) picks the words that --image-word-loss-weight weighs; its prefix weights are "
        "not used, so a run from scratch can weigh the image's words too; --resume keeps the words the run started "
        "with (default: the --init-from checkpoint's tagger)",
    )
    train.set_defaults(func=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    from model.data.dataset import synth_arguments
    from model.errors import ModelError
    from model.training.distributed import world_from_env
    from model.training.stop import stop_on_signals
    from model.training.trainer import train

    records = load_posts_or_exit("train", args.data)
    try:
        with stop_on_signals() as stop:
            result = train(
                records,
                preset=args.preset,
                ablation=args.ablation,
                out_dir=args.out,
                config=_train_config(args, image_word_loss_weight=args.image_word_loss_weight),
                cache_dir=args.cache_dir,
                feature_store=args.feature_store,
                device=args.device,
                resume=args.resume,
                init_from=args.init_from,
                init_seed=args.init_seed,
                image_words_from=args.image_words_from,
                data_info=synth_arguments(args.data),
                stop=stop,
            )
    except ModelError as exc:
        raise SystemExit(f"uapt train: {exc}") from None
    if result.stopped_early:
        return EXIT_STOPPED  # the trainer has logged where the state is and how to resume
    if not world_from_env().is_main:  # under torchrun, rank 0 reports for all
        return 0
    print(
        f"trained {result.steps} steps in {result.wall_s:.0f}s; final val loss {result.final_val_loss:.4f}; "
        f"checkpoint {args.out}"
    )
    return 0


def _register_ablate(subparsers: argparse._SubParsersAction) -> None:
    ablate = subparsers.add_parser(
        "ablate",
        help="train + evaluate the full model and the four ablations (paper Table 3)",
        description=(
            "Trains full, no_context, no_mapping, no_fusion and no_query with the same data, shuffles "
            "and schedule, once per --init-seeds seed (the parts a variant keeps start from the full "
            "model's weights), evaluates each on the split with no decoding aid, and prints a markdown table "
            "shaped like the paper's Table 3 (plus personalization and grounding), with its three targets checked "
            "under it; writes it to OUT/ablation.md, the figures to OUT/ablation.json and the val loss and grounding "
            "probe of full against no_context to OUT/curves.png. Where OUT/full_aids-initSEED holds a copy of a full "
            "run with an image-word tagger and scene reader fitted into it, that row is scored too. Each run records "
            "its machine and data; one --out never mixes kinds of machine or datasets (give another --out). "
            "Processes with distinct --only variants may share one --out at once; a last --resume over all variants "
            "writes the whole table (scripts/table3.sh). SIGTERM or Ctrl-C stops it after the current "
            f"training step (saved exactly) or evaluation, with status {EXIT_STOPPED}; --resume continues."
        ),
    )
    add_offline_args(ablate)
    add_feature_store_arg(ablate)
    _add_training_args(ablate)
    add_eval_args(ablate)
    ablate.add_argument("--out", type=Path, default=Path("runs/ablate"), help="folder for the checkpoints (VARIANT-initSEED) and the table")
    ablate.add_argument("--only", nargs="+", default=None, help="run only these variants (full and/or ablation names)")
    ablate.add_argument(
        "--resume",
        action="store_true",
        help="continue an ablation in --out: finished runs (their run.json) are read back, not redone, "
        "and a run stopped mid-training continues from its last checkpoint",
    )
    ablate.add_argument(
        "--init-seeds",
        type=int,
        nargs="+",
        default=[0],
        metavar="SEED",
        help="train every variant once per seed of the initial prefix weights; with several, each cell is "
        "mean ± standard deviation over them (default: 0)",
    )
    ablate.set_defaults(func=_cmd_ablate)


def _cmd_ablate(args: argparse.Namespace) -> int:
    from model.errors import ModelError
    from model.training.ablate import run_ablation
    from model.training.stop import stop_on_signals

    records = load_posts_or_exit("ablate", args.data)
    try:
        options = eval_options(args)
        with stop_on_signals() as stop:
            table = run_ablation(
                records,
                preset=args.preset,
                out_dir=args.out,
                config=_train_config(args),
                options=options,
                cache_dir=args.cache_dir,
                feature_store=args.feature_store,
                device=args.device,
                variants=args.only,
                init_seeds=args.init_seeds,
                resume=args.resume,
                stop=stop,
            )
    except ModelError as exc:
        raise SystemExit(f"uapt ablate: {exc}") from None
    if table is None:
        print(f"stopped on a signal; the run in progress saved its exact state in {args.out}: "
              "rerun with --resume to continue", file=sys.stderr)
        return EXIT_STOPPED
    print(table)
    return 0
