"""`uapt caption` and `uapt model info`: caption images from the command line, inspect a model's size.

Torch and the model code are imported inside the handlers so that `uapt --help` stays instant.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
from pathlib import Path

from model.config import (
    ABLATIONS,
    DEFAULT_SERVING_DTYPE,
    PRESETS,
    SERVING_DTYPE_HELP,
    SERVING_DTYPES,
    DecodingOptions,
    decoding_field,
)

PRESET_NAMES = tuple(PRESETS)
ABLATION_NAMES = ABLATIONS


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `caption` and `model` to the `uapt` parser."""
    _register_caption(subparsers)
    _register_model(subparsers)


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--preset",
        choices=PRESET_NAMES,
        default=None,
        help="backbones and sizes: 'offline' (what ships here), 'tiny' (tests), 'paper' (needs hub weights). "
        "Default: the checkpoint's preset, else offline",
    )
    parser.add_argument(
        "--ablation", choices=ABLATION_NAMES, default=None, help="paper Table 3 switch (default: the full model)"
    )
    parser.add_argument("--checkpoint", type=Path, default=None, help="checkpoint directory written by 'uapt train'")
    parser.add_argument("--device", default="auto", help="auto (CUDA if present, else CPU), cpu, cuda or cuda:N")


def _decoding_flag(parser: argparse.ArgumentParser, flag: str, name: str, kind: type) -> None:
    """A flag for DecodingOptions' field `name`, with the field's default and help."""
    source = decoding_field(name)
    shown = "" if source.default is None else f" (default: {source.default})"
    parser.add_argument(flag, dest=name, type=kind, default=source.default, help=source.metadata["help"] + shown)


def add_decoding_args(parser: argparse.ArgumentParser) -> None:
    """Beam width, temperature, repetition control and guidance: the same flags for caption, evaluate and ablate."""
    _decoding_flag(parser, "--num-beams", "num_beams", int)
    _decoding_flag(parser, "--temperature", "temperature", float)
    _decoding_flag(parser, "--no-repeat-ngram-size", "no_repeat_ngram_size", int)
    _decoding_flag(parser, "--repetition-penalty", "repetition_penalty", float)
    _decoding_flag(parser, "--image-word-weight", "image_word_weight", float)
    scene = decoding_field("scene_constraint")
    parser.add_argument(
        "--no-scene-constraint",
        dest="scene_constraint",
        action="store_false",
        default=scene.default,
        help=f"turn off the scene constraint, which is on by default: {scene.metadata['help']}",
    )


def add_serving_dtype_arg(parser: argparse.ArgumentParser) -> None:
    """--serving-dtype, for the commands that caption with a loaded model: caption and evaluate."""
    parser.add_argument(
        "--serving-dtype",
        choices=SERVING_DTYPES,
        default=DEFAULT_SERVING_DTYPE,
        help=f"{SERVING_DTYPE_HELP} (default: {DEFAULT_SERVING_DTYPE})",
    )


def decoding_from_args(args: argparse.Namespace) -> DecodingOptions:
    """The DecodingOptions a command's flags ask for: each field its flag sets (when the command has it), else its default.

    Raises DecodingError (a ModelError) naming the setting at fault.
    """
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(DecodingOptions) if hasattr(args, f.name)}
    return DecodingOptions(**given)


def _register_caption(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "caption",
        help="print n-best personalized captions for image files",
        description=(
            "Caption image files with UAPT and print the n-best captions of each, best first, with their "
            "length-normalized log-probability. Without --checkpoint the prefix networks are untrained, so "
            "the captions are noise (the offline preset's frozen backbones are pretrained; the tiny preset's "
            "are random). "
            "A checkpoint with an image-word tagger steers the captions toward words its image makes likely "
            "(see --image-word-weight). "
            "A checkpoint with an OOD file (uapt fit-ood) also gives each caption a confidence and withholds the "
            "captions of images unlike its training data or whose best caption is unlikely to be right."
        ),
    )
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image files to caption")
    parser.add_argument(
        "--keywords",
        default="",
        help='the user\'s keywords, e.g. "beach sunset surf" (space or comma separated; same for every image)',
    )
    _add_model_options(parser)
    add_serving_dtype_arg(parser)
    add_decoding_args(parser)
    parser.add_argument("-n", "--num-captions", type=int, default=3, help="captions to print per image (default: 3)")
    _decoding_flag(parser, "--max-new-tokens", "max_new_tokens", int)
    _decoding_flag(parser, "--length-penalty", "length_penalty", float)
    parser.add_argument(
        "--format", choices=("text", "json"), default="text",
        help="text: readable lines; json: one object per image per line with image, abstained, reason, ood_score "
        "and captions [{text, score, confidence}] (default: text)",
    )
    parser.add_argument(
        "--max-ood-score", type=float, default=None,
        help="abstain on images whose out-of-distribution score is above this (default: the checkpoint's OOD file's)",
    )
    parser.add_argument(
        "--min-confidence", type=float, default=None,
        help="abstain when the best caption's confidence is below this (default: the checkpoint's OOD file's)",
    )
    parser.set_defaults(func=_caption)


def _register_model(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "model", help="inspect UAPT models", description="Inspect UAPT models and presets."
    )
    commands = parser.add_subparsers(dest="model_command", metavar="COMMAND", required=True)
    info = commands.add_parser(
        "info",
        help="print a preset's backbones and its trainable and frozen parameter counts",
        description=(
            "Build the model of a preset (and ablation) and print the backbones it names and how many "
            "parameters are trainable (the prefix networks) and frozen (encoders and LM)."
        ),
    )
    _add_model_options(info)
    info.set_defaults(func=_model_info)


def _caption(args: argparse.Namespace) -> int:
    from PIL import Image, UnidentifiedImageError

    from model.captioner import Captioner
    from model.errors import ModelError

    if args.num_captions < 1:
        raise SystemExit("uapt caption: --num-captions must be at least 1")
    try:
        decoding = decoding_from_args(args)
    except ModelError as error:
        raise SystemExit(f"uapt caption: {error}") from None
    images = []
    for path in args.images:
        try:
            with Image.open(path) as image:
                images.append(image.convert("RGB"))
        except (OSError, UnidentifiedImageError) as error:
            raise SystemExit(f"uapt caption: cannot read image {path}: {error}") from None
    keywords = [word for word in re.split(r"[\s,]+", args.keywords) if word]
    model = _load(args, "caption")
    try:
        captioner = Captioner(model, decoding, max_ood_score=args.max_ood_score, min_confidence=args.min_confidence)
        features = captioner.encode_images(images)
        results = captioner.caption_encoded(features, [keywords] * len(images), num_captions=args.num_captions)
        judgements = captioner.judge(features, results)
    except ModelError as error:  # thresholds without an OOD file, or a model part that does not fit
        raise SystemExit(f"uapt caption: {error}") from None
    for path, captions, judgement in zip(args.images, results, judgements):
        if args.format == "json":
            print(json.dumps(_caption_record(path, captions, judgement), ensure_ascii=False))
            continue
        print(f"{path}  [model {captioner.model_id}]")
        if judgement.abstained:
            print(f"  abstained: {judgement.reason} (ood score {judgement.ood_score:.3f}, confidence {judgement.confidence:.2f})")
            continue
        for rank, caption in enumerate(captions, 1):
            confidence = "" if caption.confidence is None else f", confidence {caption.confidence:.2f}"
            print(f"  {rank}. {caption.text!r}  (score {caption.score:.3f}{confidence})")
    return 0


def _caption_record(path: Path, captions, judgement) -> dict:
    """One image's line of `uapt caption --format json`; an abstained image has no captions, as in the worker's event."""
    shown = [] if judgement.abstained else captions
    return {
        "image": str(path),
        "abstained": judgement.abstained,
        "reason": judgement.reason,
        "ood_score": judgement.ood_score,
        "confidence": judgement.confidence,
        "captions": [{"text": c.text, "score": c.score, "confidence": c.confidence} for c in shown],
    }


def _model_info(args: argparse.Namespace) -> int:
    model = _load(args, "model info")
    config = model.config
    print(f"preset: {config.preset}   ablation: {config.ablation or 'none'}   device: {model.device}")
    print(f"backbones: {model.backbone_id()}")
    for note in config.notes:
        print(f"note: {note}")
    print(f"prefix: {config.prefix_length} embeddings (d_model {config.d_model})")
    print("trainable:")
    trainable = 0
    for name, part in model.prefix.named_children():
        count = sum(p.numel() for p in part.parameters() if p.requires_grad)
        trainable += count
        print(f"  {name:<20} {count:>13,}")
    print("frozen:")
    frozen = 0
    for name, part in (("image encoder", model.image_encoder), ("context encoder", model.context_encoder), ("LM", model.lm)):
        count = sum(p.numel() for p in part.parameters())
        frozen += count
        print(f"  {name:<20} {count:>13,}")
    print(f"trainable parameters: {trainable:,} ({trainable * 4 / 2**20:.1f} MiB as float32)")
    print(f"frozen parameters:    {frozen:,}")
    return 0


def _load(args: argparse.Namespace, command: str):
    """load_model with every error a user can cause turned into a one-line message."""
    from model.config import ConfigError
    from model.errors import ModelError
    from model.factory import load_model

    try:
        return load_model(
            args.preset,
            checkpoint=args.checkpoint,
            device=args.device,
            ablation=args.ablation,
            serving_dtype=getattr(args, "serving_dtype", None),  # model info has no such flag: the plain load
        )
    except (ModelError, ConfigError) as error:  # a bad checkpoint, tagger, scene reader, device or preset
        raise SystemExit(f"uapt {command}: {error}") from None
