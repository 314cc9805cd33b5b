"""Benchmark: does training stay flat in memory and step time as the dataset grows, and does extraction keep up?

    .venv/bin/python -m bench.train_scale                              # 2k, 8k and 32k posts, tiny preset
    .venv/bin/python -m bench.train_scale --sizes 40 80 --steps 2      # a smoke run

For each size it synthesizes posts (`model.data.synth.write_dataset`, 100 posts a user,
with small 32-pixel images drawn here instead of the 224-pixel pictures, which would
take most of the run to draw), then in a fresh process extracts the image features into
a feature store of its own, and in another fresh process trains a fixed number of steps
from that store. Fresh processes make the memory figures comparable: each is what one
training process holds, nothing left over from the sizes before it.

- rss: RssAnon from /proc/self/status after the steps: the training process's own memory.
  File pages of the memory-mapped store are cache the kernel can drop; they do not count.
- step time: the median of the steps after the first few (warm-up).
- extract_vs_bare_encoder: the whole extraction's images/s (stat, decode in DataLoader
  workers, encoder, shard writes) over the encoder's forward alone on preprocessed
  tensors already in memory, measured in the same process after the extraction; from
  the largest size.

The last line is machine-readable (labels from the largest and smallest sizes):

    rss_growth_32k_vs_2k=<x> step_time_growth_32k_vs_2k=<x> extract_vs_bare_encoder=<x> extract_images_per_s=<x>
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from model.data.dataset import load_posts
from model.data.synth import write_dataset
from model.training.machine import cpu_name

REPO = Path(__file__).resolve().parents[1]
POSTS_PER_USER = 100
IMAGE_SIDE = 32  # the tiny preset's input size: decoding costs what the encoder's input needs
WARMUP_STEPS = 3


def size_label(posts: int) -> str:
    """2000 -> '2k'; sizes that are not whole thousands keep their number."""
    return f"{posts // 1000}k" if posts % 1000 == 0 else str(posts)


def synthesize(folder: Path, posts: int, seed: int) -> Path:
    """A dataset of `posts` posts (100 a user, fewer when smaller) with a small image each."""
    per_user = min(POSTS_PER_USER, posts)
    write_dataset(folder, users=max(1, posts // per_user), posts_per_user=per_user, seed=seed, image_splits=())
    for record in load_posts(folder, require_images=False):
        shade = zlib.crc32(record.post_id.encode()) % 200
        image = Image.new("RGB", (IMAGE_SIDE, IMAGE_SIDE), (shade, 255 - shade, (7 * shade) % 256))
        ImageDraw.Draw(image).rectangle((4, 4, 4 + shade % 20, 12 + shade % 16), fill=(255 - shade, shade, 90))
        image.save(record.image, format="PNG")
    return folder


def rss_anon_kb() -> int:
    """This process's anonymous resident memory (RssAnon), in kB."""
    for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    raise RuntimeError("no RssAnon in /proc/self/status")


def extract(data: Path, store_dir: Path, preset: str, batch_size: int, workers: int | None) -> dict:
    """Extract every post's features into a new store; then time the bare encoder on tensors in memory."""
    from model.factory import load_model
    from model.training.feature_store import FeatureStore, ImageKey

    model = load_model(preset, device="cpu")
    encoder = model.image_encoder
    records = load_posts(data)
    started = time.perf_counter()
    store = FeatureStore(store_dir, model.backbone_id())
    count = store.extract(encoder, [ImageKey.of(r.post_id, r.image) for r in records], batch_size=batch_size,
                          workers=workers)
    extract_s = time.perf_counter() - started

    sample = records[: max(4 * batch_size, 512)]  # enough batches to time, few enough to hold as tensors
    pixels = torch.stack([encoder.preprocess(Image.open(r.image).convert("RGB")) for r in sample])
    with torch.no_grad():
        encoder.features(pixels[:batch_size])  # warm-up
        started = time.perf_counter()
        for start in range(0, len(pixels), batch_size):
            encoder.features(pixels[start : start + batch_size])
        bare_s = time.perf_counter() - started
    return {"images": count, "extract_images_per_s": count / extract_s, "bare_images_per_s": len(pixels) / bare_s,
            "store_bytes": store.bytes_on_disk()}


def train_steps(data: Path, store_dir: Path, preset: str, batch_size: int, steps: int, workdir: Path) -> dict:
    """Train `steps` steps from the store with the trainer's own steps; the process's memory and step times."""
    from model.data.samples import train_profiles
    from model.factory import load_model
    from model.training.feature_store import FeatureStore
    from model.training.features import FeatureCache, Split, encode_split
    from model.training.train_config import TrainConfig
    from model.training.trainer import epoch_order, start_run, train_step

    model = load_model(preset, device="cpu", dtype="float32")
    records = load_posts(data)
    cache = FeatureCache(workdir / "cache", model)
    store = FeatureStore(store_dir, model.backbone_id())
    split = encode_split(records, "train", 5, cache, train_profiles(records), store)
    config = TrainConfig(batch_size=batch_size, precision="float32", probe_posts=0)
    no_val = Split([], torch.empty(0), torch.empty(0))
    run = start_run(model, config, workdir, None, split, no_val, time.perf_counter(),
                    resume=None, init_from=None, image_words_from=None)
    run.network = model
    model.train()
    order = epoch_order(len(split.samples), config.seed, 0)
    seconds = []
    for step in range(steps):
        index = order[(step * batch_size) % len(order) :][:batch_size]
        started = time.perf_counter()
        train_step(run, index)
        seconds.append(time.perf_counter() - started)
    timed = seconds[WARMUP_STEPS:] or seconds
    return {"train_posts": len(split.samples), "rss_anon_kb": rss_anon_kb(), "step_s": statistics.median(timed),
            "extracted_in_training": store.encoded_images}


def child(args: argparse.Namespace) -> dict:
    if args.child == "extract":
        return extract(args.data, args.store, args.preset, args.extract_batch, args.workers)
    return train_steps(args.data, args.store, args.preset, args.batch_size, args.steps, args.workdir)


def run_child(kind: str, data: Path, store: Path, args: argparse.Namespace, workdir: Path) -> dict:
    """One measurement in a fresh Python process; its last stdout line is the JSON result."""
    command = [sys.executable, "-m", "bench.train_scale", "--child", kind, "--data", str(data), "--store", str(store),
               "--preset", args.preset, "--batch-size", str(args.batch_size), "--extract-batch", str(args.extract_batch),
               "--steps", str(args.steps),
               "--workdir", str(workdir)]
    if args.workers is not None:
        command += ["--workers", str(args.workers)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"bench.train_scale: the {kind} process failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 8000, 32000], help="posts per dataset")
    parser.add_argument("--steps", type=int, default=12, help="training steps per size (default: 12)")
    parser.add_argument("--batch-size", type=int, default=16, help="training batch (default: 16)")
    parser.add_argument("--extract-batch", type=int, default=256, help="extraction batch (default: 256)")
    parser.add_argument("--preset", default="tiny", help="model preset (default: tiny)")
    parser.add_argument("--workers", type=int, default=None, help="decoding processes (default: cores - 1)")
    parser.add_argument("--out", type=Path, default=None, help="keep the datasets and stores here (default: a temp dir)")
    parser.add_argument("--child", choices=("extract", "train"), help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return
    if len(args.sizes) < 2 or min(args.sizes) < 1:
        parser.error("--sizes: give at least two positive sizes")
    with tempfile.TemporaryDirectory(dir=args.out) as tmp:
        root = Path(tmp)
        print(f"CPU: {cpu_name()}, {torch.get_num_threads()} torch threads; preset {args.preset}, "
              f"training batch {args.batch_size}, {args.steps} steps a size, extraction batch {args.extract_batch}",
              flush=True)
        results: dict[int, dict] = {}
        for size in sorted(args.sizes):
            started = time.perf_counter()
            data = synthesize(root / f"data-{size}", size, seed=size)
            synth_s = time.perf_counter() - started
            store = root / f"store-{size}"
            extracted = run_child("extract", data, store, args, root / f"work-{size}")
            trained = run_child("train", data, store, args, root / f"work-{size}")
            results[size] = {**extracted, **trained}
            print(f"{size_label(size)} posts (synthesized in {synth_s:.0f} s): extraction "
                  f"{extracted['extract_images_per_s']:.0f} images/s, bare encoder {extracted['bare_images_per_s']:.0f}, "
                  f"store {extracted['store_bytes'] / extracted['images']:.0f} bytes a post; training on "
                  f"{trained['train_posts']} posts: RssAnon {trained['rss_anon_kb'] / 1024:.0f} MiB, "
                  f"{trained['step_s'] * 1000:.0f} ms a step", flush=True)
    small, large = results[min(results)], results[max(results)]
    pair = f"{size_label(max(results))}_vs_{size_label(min(results))}"
    print(f"rss_growth_{pair}={large['rss_anon_kb'] / small['rss_anon_kb']:.3f} "
          f"step_time_growth_{pair}={large['step_s'] / small['step_s']:.3f} "
          f"extract_vs_bare_encoder={large['extract_images_per_s'] / large['bare_images_per_s']:.3f} "
          f"extract_images_per_s={large['extract_images_per_s']:.1f}")


if __name__ == "__main__":
    main()
