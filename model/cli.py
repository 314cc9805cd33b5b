"""`uapt caption` and `uapt model info`: caption images from the command line, inspect a model's size.

Torch and the model code are imported inside the handlers so that `uapt --help` stays instant.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

PRESET_NAMES = ("paper", "offline", "tiny")  # model.config.PRESETS, without importing torch here
ABLATION_NAMES = ("no_context", "no_mapping", "no_fusion", "no_query")


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


def _register_caption(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "caption",
        help="print n-best personalized captions for image files",
        description=(
            "Caption image files with UAPT and print the n-best captions of each, best first, with their "
            "length-normalized log-probability. Without --checkpoint the prefix networks are untrained, so "
            "the captions are noise; the offline and tiny presets also use random frozen image encoders."
        ),
    )
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image files to caption")
    parser.add_argument(
        "--keywords",
        default="",
        help='the user\'s keywords, e.g. "beach sunset surf" (space or comma separated; same for every image)',
    )
    _add_model_options(parser)
    parser.add_argument("--num-beams", type=int, default=3, help="beam width (default: 3, as the paper; 1 = greedy)")
    parser.add_argument("--temperature", type=float, default=0.8, help="logit temperature (default: 0.8, as the paper)")
    parser.add_argument("-n", "--num-captions", type=int, default=3, help="captions to print per image (default: 3)")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="caption length limit in tokens")
    parser.add_argument(
        "--length-penalty", type=float, default=1.0, help="score = log p / length**penalty (default: 1.0)"
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
    from model.generation import GenerationError

    if args.num_captions < 1:
        raise SystemExit("uapt caption: --num-captions must be at least 1")
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
        captioner = Captioner(
            model,
            num_beams=args.num_beams,
            temperature=args.temperature,
            max_new_tokens=args.max_new_tokens,
            length_penalty=args.length_penalty,
        )
        results = captioner.caption(images, [keywords] * len(images), num_captions=args.num_captions)
    except GenerationError as error:
        raise SystemExit(f"uapt caption: {error}") from None
    for path, captions in zip(args.images, results):
        print(f"{path}  [model {captioner.model_id}]")
        for rank, caption in enumerate(captions, 1):
            print(f"  {rank}. {caption.text!r}  (score {caption.score:.3f})")
    return 0


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
    from model.checkpoint import CheckpointError
    from model.config import ConfigError
    from model.device import DeviceError
    from model.factory import ModelUnavailable, load_model

    try:
        return load_model(args.preset, checkpoint=args.checkpoint, device=args.device, ablation=args.ablation)
    except (ModelUnavailable, CheckpointError, ConfigError, DeviceError) as error:
        raise SystemExit(f"uapt {command}: {error}") from None
