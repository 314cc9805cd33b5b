"""A reproducible folder of images the model should refuse: ``python -m model.evaluation.ood_set --out DIR``.

`uapt evaluate --ood-dir DIR` scores the out-of-distribution detector (`model.guidance.ood`)
on it. Every image ships in a package or is drawn here, so the folder is the same on
any machine with the same packages:

- scikit-image's pictures, less the ones the synthetic generator pastes into its scenes
  (`model.data.synth.PHOTO_OBJECTS`: those are in-distribution by construction);
- scikit-learn's sample images;
- the bitmap wallpapers of Debian's gnome-backgrounds, when installed (skipped otherwise);
- blank, solid-colour, noise and text-on-white images drawn with a fixed seed.

``ood_set.json`` names each file's kind (photo, wallpaper, blank, solid, noise, text), so
the evaluation can say which kinds were refused.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from model.data.synth import PHOTO_OBJECTS

MANIFEST = "ood_set.json"
SIDE_PX = 512  # larger pictures are shrunk to this, so the folder stays small
SKIMAGE_PICTURES = (
    "camera", "coins", "moon", "page", "text", "clock", "immunohistochemistry", "brick", "grass", "gravel",
    "checkerboard", "colorwheel", "logo", "hubble_deep_field", "retina", "cell", "microaneurysms",
    "shepp_logan_phantom", "binary_blobs",
)
GENERATOR_PICTURES = {loader for loader, _ in PHOTO_OBJECTS.values()} | {"cat"}  # skimage's cat is chelsea
WALLPAPERS = Path("/usr/share/backgrounds/gnome")
SOLID_COLOURS = {"red": (220, 30, 30), "green": (30, 160, 60), "blue": (30, 60, 200), "grey": (128, 128, 128),
                 "yellow": (240, 220, 40), "magenta": (200, 40, 200)}
TEXTS = ("Quarterly report: revenue rose 4% on the prior year.", "Terms and conditions apply. See page 12.",
         "def main():\n    return 0")


def _rgb(array: np.ndarray) -> Image.Image:
    """A scikit-image picture (grey, RGB or RGBA; bool, int or float) as an 8-bit RGB image."""
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    elif array.dtype != np.uint8:
        array = (255 * (array - array.min()) / max(float(array.max() - array.min()), 1e-9)).astype(np.uint8)
    image = Image.fromarray(array).convert("RGB")
    image.thumbnail((SIDE_PX, SIDE_PX))
    return image


def _drawn(seed: int) -> dict[str, tuple[str, Image.Image]]:
    """Blank, solid-colour, noise and text-on-white pictures, the same for the same seed."""
    rng = np.random.default_rng(seed)
    size = (SIDE_PX, SIDE_PX)
    drawn = {"blank-white": ("blank", Image.new("RGB", size, (255, 255, 255))),
             "blank-black": ("blank", Image.new("RGB", size, (0, 0, 0)))}
    for name, colour in SOLID_COLOURS.items():
        drawn[f"solid-{name}"] = ("solid", Image.new("RGB", size, colour))
    drawn["noise-uniform"] = ("noise", Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)))
    grey = rng.normal(128, 40, size).clip(0, 255).astype(np.uint8)
    drawn["noise-gaussian-grey"] = ("noise", Image.fromarray(grey).convert("RGB"))
    coarse = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    drawn["noise-blocks"] = ("noise", Image.fromarray(coarse).resize(size, Image.NEAREST))
    for i, text in enumerate(TEXTS):
        image = Image.new("RGB", size, (255, 255, 255))
        ImageDraw.Draw(image).multiline_text((24, 200), text, fill=(0, 0, 0), font_size=22)
        drawn[f"text-{i}"] = ("text", image)
    return drawn


def write_ood_set(out: str | Path, *, wallpapers: Path = WALLPAPERS, seed: int = 0) -> dict[str, str]:
    """Write the folder's PNGs and its manifest; returns file name -> kind."""
    from skimage import data as skimage_data
    from sklearn.datasets import load_sample_images

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    images: dict[str, tuple[str, Image.Image]] = {}
    for name in SKIMAGE_PICTURES:
        if name in GENERATOR_PICTURES:
            raise ValueError(f"SKIMAGE_PICTURES names {name!r}, a picture the synthetic generator uses")
        picture = skimage_data.binary_blobs(rng=seed) if name == "binary_blobs" else getattr(skimage_data, name)()  # drawn at random
        images[f"skimage-{name}"] = ("photo", _rgb(picture))
    samples = load_sample_images()
    for file_name, array in zip(samples.filenames, samples.images):
        images[f"sklearn-{Path(file_name).stem}"] = ("photo", _rgb(array))
    for path in sorted(wallpapers.glob("*.webp")) if wallpapers.is_dir() else []:
        with Image.open(path) as image:
            images[f"wallpaper-{path.stem}"] = ("wallpaper", _rgb(np.asarray(image.convert("RGB"))))
    images.update(_drawn(seed))
    kinds = {}
    for stem, (kind, image) in images.items():
        image.save(out / f"{stem}.png")
        kinds[f"{stem}.png"] = kind
    (out / MANIFEST).write_text(json.dumps(kinds, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return kinds


def read_kinds(directory: str | Path) -> dict[str, str]:
    """File name -> kind from the folder's manifest; {} for a folder without one (any folder of images will do)."""
    path = Path(directory) / MANIFEST
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the folder of out-of-distribution images for uapt evaluate --ood-dir.")
    parser.add_argument("--out", required=True, type=Path, help="folder to write the images and ood_set.json into")
    parser.add_argument("--wallpapers", type=Path, default=WALLPAPERS, help=f"gnome-backgrounds folder (default: {WALLPAPERS}; skipped when absent)")
    args = parser.parse_args(argv)
    kinds = write_ood_set(args.out, wallpapers=args.wallpapers)
    counts = {kind: list(kinds.values()).count(kind) for kind in sorted(set(kinds.values()))}
    print(f"wrote {len(kinds)} images to {args.out}: {counts}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
