"""`uapt data synth|check|stats`, `uapt train`, `uapt evaluate`, `uapt ablate`.

The offline half of the product. Handlers import torch and friends lazily so
`uapt --help` stays instant; errors a user can cause (`ModelError`) end in one clear line,
and any other exception is a bug that keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from model.cli import add_decoding_args
from model.training.stop import EXIT_STOPPED

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
    """Add the data, train, evaluate and ablate subcommands."""
    _register_data(subparsers)
    _register_train(subparsers)
    _register_evaluate(subparsers)
    _register_fit_image_words(subparsers)
    _register_fit_scene_reader(subparsers)
    _register_ablate(subparsers)


# ---------------------------------------------------------------- data


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
            "sign-offs; some mostly off-topic). Same arguments, same bytes. " + DATA_FORMAT_HELP
        ),
    )
    synth.add_argument("--out", required=True, type=Path, help="folder to write posts.jsonl and images/ into")
    synth.add_argument("--users", type=int, default=12, help="number of users (default: 12, the demo checkpoint's data)")
    synth.add_argument("--posts-per-user", type=int, default=500, help="posts per user (default: 500, the demo checkpoint's data)")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    synth.set_defaults(func=_cmd_synth)

    check = sub.add_parser("check", help="validate a dataset and list every bad line", description=DATA_FORMAT_HELP)
    check.add_argument("dir", type=Path, help="dataset folder")
    check.add_argument("--no-verify-images", action="store_true", help="only check that image files exist")
    check.set_defaults(func=_cmd_check)

    stats = sub.add_parser("stats", help="Table 1 statistics of a dataset", description=STATS_HELP)
    stats.add_argument("dir", type=Path, help="dataset folder")
    stats.add_argument("--json", action="store_true", help="print JSON instead of a markdown table")
    stats.set_defaults(func=_cmd_stats)


def _cmd_synth(args: argparse.Namespace) -> int:
    from model.data.synth import write_dataset
    from model.errors import ModelError

    try:
        out = write_dataset(args.out, users=args.users, posts_per_user=args.posts_per_user, seed=args.seed)
    except ModelError as exc:
        raise SystemExit(f"uapt data synth: {exc}") from None
    print(f"wrote {args.users * args.posts_per_user} posts by {args.users} users to {out}")
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


def _load_or_exit(command: str, data_dir: Path):
    from model.data.dataset import DatasetError, load_posts

    try:
        return load_posts(data_dir)
    except DatasetError as exc:
        raise SystemExit(f"uapt {command}: {exc}") from None


def _cmd_stats(args: argparse.Namespace) -> int:
    from model.data.stats import compute_stats

    stats = compute_stats(_load_or_exit("data stats", args.dir))
    print(json.dumps(stats.to_dict(), indent=2) if args.json else stats.markdown())
    return 0


# ---------------------------------------------------------------- train / evaluate / ablate


def _add_model_args(parser: argparse.ArgumentParser, *, keywords: bool = True) -> None:
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
        "float32, a second float32 run on another CPU did not (docs/RESULTS.md 1.17, 1.18)",
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
    _add_model_args(train)
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
        f"(default: {d.image_word_loss_weight}, off; docs/RESULTS.md 1.24)",
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
    from model.training.stop import stop_on_signals
    from model.training.trainer import train

    records = _load_or_exit("train", args.data)
    try:
        with stop_on_signals() as stop:
            result = train(
                records,
                preset=args.preset,
                ablation=args.ablation,
                out_dir=args.out,
                config=_train_config(args, image_word_loss_weight=args.image_word_loss_weight),
                cache_dir=args.cache_dir,
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
    print(
        f"trained {result.steps} steps in {result.wall_s:.0f}s; final val loss {result.final_val_loss:.4f}; "
        f"checkpoint {args.out}"
    )
    return 0


def _eval_options(args: argparse.Namespace):
    """The decoding and scoring options of `evaluate` and `ablate` (see _add_eval_args)."""
    from model.evaluation.evaluate import EvalOptions

    return EvalOptions(
        split=args.split,
        num_beams=args.num_beams,
        temperature=args.temperature,
        no_repeat_ngram_size=args.no_repeat_ngram_size,
        repetition_penalty=args.repetition_penalty,
        image_word_weight=args.image_word_weight,
        scene_constraint=args.scene_constraint,
        limit=args.limit,
        keywords_k=args.keywords,
        cold_start=args.cold_start,
    )


def _add_eval_args(parser: argparse.ArgumentParser) -> None:
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
    _add_model_args(evaluate)
    _add_eval_args(evaluate)
    evaluate.add_argument("--checkpoint", required=True, type=Path, help="checkpoint folder from 'uapt train'")
    evaluate.add_argument("--out", type=Path, default=None, help="write the JSON report here (default: CHECKPOINT/eval-SPLIT.json)")
    evaluate.add_argument(
        "--report",
        type=Path,
        default=None,
        help="also write one self-contained HTML page: every image with its user, keywords, real text and n-best captions",
    )
    evaluate.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from model.errors import ModelError
    from model.evaluation.evaluate import evaluate_checkpoint

    records = _load_or_exit("evaluate", args.data)
    try:
        options = _eval_options(args)
        report = evaluate_checkpoint(
            records, args.checkpoint, options=options, cache_dir=args.cache_dir, device=args.device, report_path=args.report
        )
    except ModelError as exc:
        raise SystemExit(f"uapt evaluate: {exc}") from None
    out = args.out or args.checkpoint / f"eval-{args.split}.json"
    out.write_text(json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(report.markdown())
    print(f"report: {out}" + (f", page: {args.report}" if args.report else ""), file=sys.stderr)
    return 0


def _register_fit_image_words(subparsers: argparse._SubParsersAction) -> None:
    from model.image_words_config import BARE_FORMS, TaggerFit

    d = TaggerFit()
    fit = subparsers.add_parser(
        "fit-image-words",
        help="fit a checkpoint's image-word tagger, which steers decoding toward words the image makes likely",
        description=(
            "Fits a logistic read-out from the frozen image features to the words of the train captions "
            "(no labels) and saves it beside the checkpoint's weights (image_words.safetensors/.json). "
            "Decoding then adds WEIGHT x (log p(word | image) - log p(word)) to each vocabulary word's "
            "logits: words the image makes likelier than usual gain, words it makes unlikely lose. "
            "Takes a minute or two on a CPU for each --l2 value; the LM is loaded only for its tokenizer."
        ),
    )
    _add_model_args(fit, keywords=False)  # the tagger reads images and captions, no keywords
    fit.add_argument("--checkpoint", required=True, type=Path, help="checkpoint folder to fit for and write into")
    fit.add_argument("--min-count", type=int, default=d.min_count, help=f"a word enters the vocabulary when this many train captions use it (default: {d.min_count})")
    fit.add_argument(
        "--bands", type=int, default=d.bands,
        help="horizontal bands of the image's feature grid that the read-out sees beside the whole-image mean, top "
        f"to bottom, so that what is above (sky) is told from what is below (ground) (default: {d.bands}: the mean alone)",
    )
    fit.add_argument(
        "--l2", type=float, nargs="+", default=list(d.l2),
        help="L2 penalty on the read-out weights; with several values (e.g. 1e-3 3e-4 1e-4 3e-5) each word keeps "
        "the one with its lowest val cross-entropy, so that words the image predicts can be read more sharply "
        f"than style words (default: {' '.join(map(str, d.l2))})",
    )
    fit.add_argument("--steps", type=int, default=d.steps, help=f"full-batch optimizer steps (default: {d.steps})")
    fit.add_argument("--weight", type=float, default=d.weight, help=f"default guidance weight stored with the tagger; 0 turns it off (default: {d.weight})")
    fit.add_argument(
        "--min-val-gain", type=float, default=d.min_val_gain,
        help="steer only words whose val cross-entropy is at least this share below their prior's, i.e. words "
        f"the image predicts (default: {d.min_val_gain}; 0 steers every word)",
    )
    fit.add_argument(
        "--plausibility", type=float, default=d.plausibility,
        help="guidance moves only the tokens that decoding (the LM after the repetition penalty and the temperature) "
        "gives at least this share of its most likely next token's probability, so a sure read-out cannot force "
        "a word where the LM would never put one "
        f"(default: {d.plausibility}: every token)",
    )
    fit.add_argument(
        "--bare-form", choices=BARE_FORMS, default=d.bare_form,
        help="where to steer each word's form without a leading space ('cat'; ' cat' is steered at every token): "
        "that form is the caption's first word, but also follows '#' and ends longer words (' bob' + 'cat'); "
        "'first-word' steers it at the caption's first token only "
        f"(default: {d.bare_form}; docs/RESULTS.md 1.22, 1.23)",
    )
    fit.add_argument("--pmi-cap", type=float, default=d.pmi_cap, help=f"largest |log-ratio| one word gets (default: {d.pmi_cap})")
    fit.set_defaults(func=_cmd_fit_image_words)


def _cmd_fit_image_words(args: argparse.Namespace) -> int:
    from model.errors import ModelError
    from model.image_words_config import TaggerFit
    from model.training.image_words_fit import fit_checkpoint_tagger

    records = _load_or_exit("fit-image-words", args.data)
    try:
        fit = TaggerFit(min_count=args.min_count, steps=args.steps, l2=args.l2, weight=args.weight, pmi_cap=args.pmi_cap,
                       min_val_gain=args.min_val_gain, bands=args.bands, plausibility=args.plausibility,
                       bare_form=args.bare_form)
        figures = fit_checkpoint_tagger(records, args.checkpoint, fit, cache_dir=args.cache_dir, device=args.device)
    except ModelError as exc:
        raise SystemExit(f"uapt fit-image-words: {exc}") from None
    print(json.dumps(figures, indent=1))
    return 0


def _register_fit_scene_reader(subparsers: argparse._SubParsersAction) -> None:
    from model.scene_reader_config import SceneReaderFit

    d = SceneReaderFit()
    fit = subparsers.add_parser(
        "fit-scene-reader",
        help="fit a checkpoint's scene reader, which makes beam search name the scene it is sure of",
        description=(
            "Fits a softmax read-out from the frozen image features to the train split's scene labels "
            "(the dataset's `labels`, docs/DATASET.md), finds the words the train captions use for each "
            "scene, and saves both beside the checkpoint's weights (scene_reader.safetensors/.json). Where the "
            "reader gives an image's scene at least --min-confidence, beam search then ranks first the captions "
            "that hold one of that scene's words (constrained beam search; uapt evaluate --no-scene-constraint "
            "turns it off). Takes a minute on a CPU once the image features are cached."
        ),
    )
    _add_model_args(fit, keywords=False)  # the reader reads images, labels and captions, no keywords
    fit.add_argument("--checkpoint", required=True, type=Path, help="checkpoint folder to fit for and write into")
    fit.add_argument(
        "--min-confidence", type=float, default=d.min_confidence,
        help="require a scene's words only where the reader gives that scene at least this probability; the fit "
        f"prints the val accuracy and coverage at a few thresholds (default: {d.min_confidence})",
    )
    fit.add_argument("--bands", type=int, default=d.bands, help=f"horizontal bands of the feature grid read beside the mean (default: {d.bands})")
    fit.add_argument("--l2", type=float, default=d.l2, help=f"L2 penalty on the read-out weights (default: {d.l2})")
    fit.add_argument("--steps", type=int, default=d.steps, help=f"full-batch optimizer steps (default: {d.steps})")
    fit.add_argument("--min-count", type=int, default=d.min_count, help=f"a word can name a scene when this many train captions use it (default: {d.min_count})")
    fit.add_argument(
        "--purity", type=float, default=d.purity,
        help=f"... and at least this share of those captions show that scene (default: {d.purity})",
    )
    fit.set_defaults(func=_cmd_fit_scene_reader)


def _cmd_fit_scene_reader(args: argparse.Namespace) -> int:
    from model.errors import ModelError
    from model.scene_reader_config import SceneReaderFit
    from model.training.scene_reader_fit import fit_checkpoint_scene_reader

    records = _load_or_exit("fit-scene-reader", args.data)
    try:
        fit = SceneReaderFit(bands=args.bands, steps=args.steps, l2=args.l2, min_count=args.min_count,
                             purity=args.purity, min_confidence=args.min_confidence)
        figures = fit_checkpoint_scene_reader(records, args.checkpoint, fit, cache_dir=args.cache_dir, device=args.device)
    except ModelError as exc:
        raise SystemExit(f"uapt fit-scene-reader: {exc}") from None
    print(json.dumps(figures, indent=1))
    return 0


def _register_ablate(subparsers: argparse._SubParsersAction) -> None:
    ablate = subparsers.add_parser(
        "ablate",
        help="train + evaluate the full model and the four ablations (paper Table 3)",
        description=(
            "Trains full, no_context, no_mapping, no_fusion and no_query with the same data, shuffles "
            "and schedule, once per --init-seeds seed (the parts a variant keeps start from the full "
            "model's weights), evaluates each on the split, and prints a markdown table shaped like the "
            "paper's Table 3 (plus the personalization score). SIGTERM or Ctrl-C stops it after the current "
            f"training step (saved exactly) or evaluation, with status {EXIT_STOPPED}; --resume continues."
        ),
    )
    _add_model_args(ablate)
    _add_training_args(ablate)
    _add_eval_args(ablate)
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

    records = _load_or_exit("ablate", args.data)
    try:
        options = _eval_options(args)
        with stop_on_signals() as stop:
            table = run_ablation(
                records,
                preset=args.preset,
                out_dir=args.out,
                config=_train_config(args),
                options=options,
                cache_dir=args.cache_dir,
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
