"""Benchmark: batched, KV-cached beam search against the naive reference decoder.

    .venv/bin/python -m bench.generation --preset offline --batch 16 --num-beams 3 --max-new-tokens 20

Both decoders caption the same images with the same prefix and the same settings
(repetition control included, as served) in the same run; the outputs must be identical (token ids, scores within 1e-4). Untrained prefix weights
rarely emit eos, so every caption runs to --max-new-tokens: the comparison is of
equal work. The last line is machine-readable:

    speedup_vs_naive=<x> identical=<true|false> captions_per_s=<y>

where captions_per_s counts images whose n-best list the batched decoder produced
per second (median run).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable, Sequence

import torch
from PIL import Image, ImageDraw

from model.config import NO_REPEAT_NGRAM_SIZE, REPETITION_PENALTY
from model.factory import load_model
from model.generation import BeamSettings, beam_search, naive_beam_search
from model.keywords import keywords_to_text

KEYWORDS = [["beach", "sunset"], ["coffee", "morning"], [], ["dog", "park", "run"], ["city", "night"], ["cake"]]
SCORE_TOLERANCE = 1e-4


def synthetic_images(count: int, seed: int = 0) -> list[Image.Image]:
    """Seeded images with a coloured background and a few shapes (no files needed)."""
    rng = random.Random(seed)
    images = []
    for _ in range(count):
        image = Image.new("RGB", (224, 224), tuple(rng.randrange(256) for _ in range(3)))
        draw = ImageDraw.Draw(image)
        for _ in range(rng.randint(1, 4)):
            x, y, size = rng.randrange(180), rng.randrange(180), rng.randint(20, 80)
            colour = tuple(rng.randrange(256) for _ in range(3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x, y, x + size, y + size), fill=colour)
        images.append(image)
    return images


def timed(run: Callable[[], object], repeats: int) -> tuple[list[float], object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return times, result


def same_outputs(fast: Sequence[Sequence], slow: Sequence[Sequence]) -> bool:
    """Same n-best token ids for every image, scores within SCORE_TOLERANCE."""
    if len(fast) != len(slow):
        return False
    for a_list, b_list in zip(fast, slow):
        if [c.token_ids for c in a_list] != [c.token_ids for c in b_list]:
            return False
        if any(abs(a.score - b.score) > SCORE_TOLERANCE for a, b in zip(a_list, b_list)):
            return False
    return True


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.generation", description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny", choices=("tiny", "offline"), help="model preset (default: tiny)")
    parser.add_argument("--batch", type=int, default=16, help="images per batch (default: 16)")
    parser.add_argument("--num-beams", type=int, default=3, help="beam width (default: 3)")
    parser.add_argument("--temperature", type=float, default=0.8, help="logit temperature (default: 0.8)")
    parser.add_argument("--max-new-tokens", type=int, default=20, help="caption length in tokens (default: 20)")
    parser.add_argument(
        "--no-repeat-ngram-size", type=int, default=NO_REPEAT_NGRAM_SIZE,
        help=f"n-gram blocking in both decoders (default: {NO_REPEAT_NGRAM_SIZE}, as served)",
    )
    parser.add_argument(
        "--repetition-penalty", type=float, default=REPETITION_PENALTY,
        help=f"repetition penalty in both decoders (default: {REPETITION_PENALTY}, as served)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each decoder (default: 3)")
    parser.add_argument("--prompts", action="store_true", help="give each image a text prompt of a different length")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    parser.add_argument("--dtype", default=None, help="float32, bfloat16 or float16 (default: half on CUDA, else float32)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    start = time.perf_counter()
    model = load_model(args.preset, device=args.device, dtype=args.dtype)
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    images = synthetic_images(args.batch)
    image_features = model.encode_images(images)
    context_features = model.encode_context([keywords_to_text(KEYWORDS[i % len(KEYWORDS)]) for i in range(args.batch)])
    encode_s = time.perf_counter() - start
    prompts = None
    if args.prompts:
        words = "a photo of my new favourite place in the whole city".split()
        prompts = [" ".join(words[: i % 6]) for i in range(args.batch)]

    settings = BeamSettings(
        num_beams=args.num_beams,
        temperature=args.temperature,
        max_new_tokens=args.max_new_tokens,
        no_repeat_ngram_size=args.no_repeat_ngram_size,
        repetition_penalty=args.repetition_penalty,
    )
    with torch.no_grad():
        prefix = model.prefix_embeddings(image_features, context_features)
    prompt_ids = None if prompts is None else [model.tokenizer(p, add_special_tokens=False).input_ids for p in prompts]

    def decode(search) -> list:
        result = search(model.lm, prefix, model.eos_id, settings, prompt_ids)
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        return result

    decode(beam_search)  # warm-up: first-call allocations and kernel selection
    batched_times, batched = timed(lambda: decode(beam_search), args.repeats)
    naive_times, naive = timed(lambda: decode(naive_beam_search), args.repeats)
    batched_s, naive_s = statistics.median(batched_times), statistics.median(naive_times)
    identical = same_outputs(batched, naive)
    lengths = [len(c.token_ids) for image in batched for c in image]

    print(
        f"preset={args.preset} device={model.device} dtype={next(model.lm.parameters()).dtype} "
        f"threads={torch.get_num_threads()} batch={args.batch} beams={args.num_beams} "
        f"max_new_tokens={args.max_new_tokens} prompts={'mixed' if prompts else 'none'}"
    )
    print(f"load_s={load_s:.1f} encode_s={encode_s:.2f} mean_caption_tokens={statistics.mean(lengths):.1f}")
    print(f"batched_s={batched_s:.3f} runs={[round(t, 3) for t in batched_times]}")
    print(f"naive_s={naive_s:.3f} runs={[round(t, 3) for t in naive_times]}")
    print(f"example: {model.tokenizer.decode(list(batched[0][0].token_ids)).strip()!r}")
    print(
        f"speedup_vs_naive={naive_s / batched_s:.2f} identical={str(identical).lower()} "
        f"captions_per_s={args.batch / batched_s:.2f}"
    )


if __name__ == "__main__":
    main()
