"""`uapt fit-image-words`, `uapt fit-scene-reader` and `uapt fit-ood`: fit a checkpoint's read-outs.

The read-outs are fitted on a checkpoint's frozen image features and saved beside its weights;
the prefix networks are not touched.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from model.data.cli import add_offline_args, load_posts_or_exit


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the fit-image-words, fit-scene-reader and fit-ood subcommands."""
    _register_fit_image_words(subparsers)
    _register_fit_scene_reader(subparsers)
    _register_fit_ood(subparsers)


def _run_fit(command: str, fit: Callable[[], dict]) -> int:
    """Run one fit and print its figures as JSON; a user's error (`ModelError`) is one line naming the command."""
    from model.errors import ModelError

    try:
        figures = fit()
    except ModelError as exc:
        raise SystemExit(f"uapt {command}: {exc}") from None
    print(json.dumps(figures, indent=1))
    return 0


def _register_fit_image_words(subparsers: argparse._SubParsersAction) -> None:
    from model.guidance.tagger_config import BARE_FORMS, TaggerFit

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
    add_offline_args(fit, keywords=False)  # the tagger reads images and captions, no keywords
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
        f"(default: {d.bare_form}; docs/RESULTS.md)",
    )
    fit.add_argument("--pmi-cap", type=float, default=d.pmi_cap, help=f"largest |log-ratio| one word gets (default: {d.pmi_cap})")
    fit.set_defaults(func=_cmd_fit_image_words)


def _cmd_fit_image_words(args: argparse.Namespace) -> int:
    from model.guidance.tagger_config import TaggerFit
    from model.training.fit_tagger import fit_checkpoint_tagger

    records = load_posts_or_exit("fit-image-words", args.data)

    def fit() -> dict:
        config = TaggerFit(min_count=args.min_count, steps=args.steps, l2=args.l2, weight=args.weight, pmi_cap=args.pmi_cap,
                           min_val_gain=args.min_val_gain, bands=args.bands, plausibility=args.plausibility,
                           bare_form=args.bare_form)
        return fit_checkpoint_tagger(records, args.checkpoint, config, cache_dir=args.cache_dir, device=args.device)

    return _run_fit("fit-image-words", fit)


def _register_fit_scene_reader(subparsers: argparse._SubParsersAction) -> None:
    from model.guidance.scene_reader_config import SceneReaderFit

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
    add_offline_args(fit, keywords=False)  # the reader reads images, labels and captions, no keywords
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
    from model.guidance.scene_reader_config import SceneReaderFit
    from model.training.fit_scene_reader import fit_checkpoint_scene_reader

    records = load_posts_or_exit("fit-scene-reader", args.data)

    def fit() -> dict:
        config = SceneReaderFit(bands=args.bands, steps=args.steps, l2=args.l2, min_count=args.min_count,
                                purity=args.purity, min_confidence=args.min_confidence)
        return fit_checkpoint_scene_reader(records, args.checkpoint, config, cache_dir=args.cache_dir, device=args.device)

    return _run_fit("fit-scene-reader", fit)


def _register_fit_ood(subparsers: argparse._SubParsersAction) -> None:
    from model.guidance.ood_config import OODFit

    d = OODFit()
    fit = subparsers.add_parser(
        "fit-ood",
        help="fit a checkpoint's out-of-distribution score and caption confidence, with which the worker abstains",
        description=(
            "Fits the out-of-distribution score (cosine distance to the k-th nearest train image, in a PCA space of "
            "the mean-pooled frozen image features) on the train split, and the caption confidence (a logistic "
            "regression of the caption's score, the OOD score and the scene reader's reading) on the val split's "
            "labels, and saves both beside the checkpoint's weights (ood.safetensors/.json) with the default "
            "thresholds: --val-quantile of the val images' OOD scores, and --min-confidence."
        ),
    )
    add_offline_args(fit, keywords=False)
    fit.add_argument("--checkpoint", required=True, type=Path, help="checkpoint folder to fit for and write into")
    fit.add_argument(
        "--val-captions", type=Path, default=None,
        help="a 'uapt evaluate --split val --out FILE' report of this checkpoint: calibrate on its n-best captions "
        "instead of decoding val posts here",
    )
    fit.add_argument(
        "--calibration-posts", type=int, default=300,
        help="without --val-captions, decode this many val posts to calibrate on (default: 300)",
    )
    fit.add_argument("--dims", type=int, default=d.dims, help=f"PCA components of the pooled features (default: {d.dims})")
    fit.add_argument("--k", type=int, default=d.k, help=f"distance to the k-th nearest train image (default: {d.k})")
    fit.add_argument(
        "--val-quantile", type=float, default=d.val_quantile,
        help=f"default max_ood_score: this quantile of the val images' OOD scores (default: {d.val_quantile})",
    )
    fit.add_argument(
        "--min-confidence", type=float, default=d.min_confidence,
        help=f"default min_confidence stored with the file (default: {d.min_confidence}: more likely right than wrong)",
    )
    fit.set_defaults(func=_cmd_fit_ood)


def _cmd_fit_ood(args: argparse.Namespace) -> int:
    from model.guidance.ood_config import OODFit
    from model.training.fit_ood import fit_checkpoint_ood

    if args.calibration_posts < 1:
        raise SystemExit("uapt fit-ood: --calibration-posts must be at least 1")
    records = load_posts_or_exit("fit-ood", args.data)

    def fit() -> dict:
        config = OODFit(dims=args.dims, k=args.k, val_quantile=args.val_quantile, min_confidence=args.min_confidence)
        return fit_checkpoint_ood(
            records, args.checkpoint, config, val_captions=args.val_captions, calibration_posts=args.calibration_posts,
            cache_dir=args.cache_dir, device=args.device,
        )

    return _run_fit("fit-ood", fit)
