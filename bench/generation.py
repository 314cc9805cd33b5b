"""Benchmark: batched, KV-cached beam search against the naive reference and Hugging Face `generate`.

    .venv/bin/python -m bench.generation --preset offline --batch 16 --num-beams 3 --max-new-tokens 20

All three decoders caption the same images from the same prefix with the same
settings (repetition control included, as served) in the same run. The naive
reference must give identical outputs (token ids, scores within 1e-4). Hugging
Face's `lm.generate(inputs_embeds=prefix, num_beams=...)` is what a user would
call instead; it may pick other beams legitimately, because it applies the
repetition penalty and the temperature to log-probabilities after the softmax
where this project (and the naive reference) applies them to the logits, so the
share of images whose best caption agrees is printed beside its time.
Untrained prefix weights rarely emit eos, so every caption runs to
--max-new-tokens: the comparison is of equal work. The last line is machine-readable:

    speedup_vs_naive=<x> speedup_vs_hf=<y> identical=<true|false> captions_per_s=<z>

where captions_per_s counts images whose n-best list the batched decoder produced
per second (median run). With a checkpoint that has an image-word tagger
(`uapt fit-image-words`), both decoders apply its guidance (`--image-word-weight`,
default the tagger's own weight), the batched decoder is also timed without it
(`guidance_cost` is the ratio), and Hugging Face, which has no per-image logit
bias, is skipped. With a checkpoint that has a scene reader (`uapt fit-scene-reader`),
both decoders also require the sure scene's words (`--no-scene-constraint` turns
that off), the batched decoder is timed without them too (`constraint_cost`), and
Hugging Face is skipped. `--preset paper --random-weights` times the paper's
architecture (EVA02-L-14, GPT-2 medium) with random weights: speed does not depend
on weight values, and nothing has to be downloaded.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
import warnings
from collections.abc import Callable, Sequence

import torch
from PIL import Image, ImageDraw
from transformers import LogitsProcessorList, TemperatureLogitsWarper

from model.cli import add_decoding_args, decoding_from_args
from model.config import DecodingOptions, get_config, with_random_weights
from model.factory import load_model
from model.generation import TokenBias, beam_search, naive_beam_search
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


def hf_best_captions(model, prefix: torch.Tensor, decoding: DecodingOptions) -> list[tuple[int, ...]]:
    """Hugging Face beam search from the same prefix embeddings: each image's best caption (token ids, no eos)."""
    with warnings.catch_warnings():  # it warns that the penalties see generated tokens only: so do ours
        warnings.filterwarnings("ignore", message="Passing `(repetition_penalty|no_repeat_ngram_size)`")
        out = model.lm.generate(
            inputs_embeds=prefix,
            attention_mask=torch.ones(prefix.shape[:2], dtype=torch.long, device=prefix.device),
            num_beams=decoding.num_beams,
            num_return_sequences=decoding.num_beams,
            max_new_tokens=decoding.max_new_tokens,
            do_sample=False,
            length_penalty=decoding.length_penalty,
            repetition_penalty=decoding.repetition_penalty,
            no_repeat_ngram_size=decoding.no_repeat_ngram_size,
            logits_processor=LogitsProcessorList([TemperatureLogitsWarper(decoding.temperature)]),
            eos_token_id=model.eos_id,
            pad_token_id=model.eos_id,
        )
    best = out[:: decoding.num_beams].tolist()  # returned sequences are sorted by score within each image
    return [tuple(token for token in row if token != model.eos_id) for row in best]


def print_profile(decode: Callable[[], object], device: torch.device) -> None:
    """Where one batched decode spends its time, by operator (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        decode()
    sort_by = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=sort_by, row_limit=15))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.generation", description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny", choices=("tiny", "offline", "paper"), help="model preset (default: tiny)")
    parser.add_argument(
        "--random-weights", action="store_true",
        help="build the preset's architecture with RANDOM backbone weights (timing only; needed for paper here)",
    )
    parser.add_argument("--checkpoint", default=None, help="trained prefix weights (default: untrained, captions run to full length)")
    parser.add_argument("--batch", type=int, default=16, help="images per batch (default: 16)")
    add_decoding_args(parser)  # the served defaults, in both decoders
    parser.add_argument("--max-new-tokens", type=int, default=20, help="caption length in tokens (default: 20)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of the batched decoder and of HF (default: 3; the naive reference runs once)")
    parser.add_argument("--prompts", action="store_true", help="give each image a text prompt of a different length")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    parser.add_argument("--dtype", default=None, help="float32, bfloat16 or float16 (default: half on CUDA, else float32)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--skip-naive", action="store_true", help="do not run the naive reference (slow for large models)")
    parser.add_argument("--profile", action="store_true", help="print a torch.profiler table of one batched decode")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    start = time.perf_counter()
    config = get_config(args.preset)
    if args.random_weights:
        config = with_random_weights(config)
        print(f"NOTE: {config.notes[-1]}")
    model = load_model(config, checkpoint=args.checkpoint, device=args.device, dtype=args.dtype)
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

    decoding = decoding_from_args(args)
    with torch.no_grad():
        prefix = model.prefix_embeddings(image_features, context_features)
        token_bias = model.word_bias(image_features, decoding.image_word_weight)
        required = model.required_scene_ids(image_features) if decoding.scene_constraint else None
    prompt_ids = None if prompts is None else [model.tokenizer(p, add_special_tokens=False).input_ids for p in prompts]

    def decode(search, bias: TokenBias | None = token_bias, required_ids: list[list[int]] | None = required) -> list:
        result = search(model.lm, prefix, model.eos_id, decoding, prompt_ids, bias, required_ids)
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        return result

    def hf_decode() -> list:
        result = hf_best_captions(model, prefix, decoding)
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        return result

    decode(beam_search)  # warm-up: first-call allocations and kernel selection
    batched_times, batched = timed(lambda: decode(beam_search), args.repeats)
    naive_times, naive = timed(lambda: decode(naive_beam_search), 0 if args.skip_naive else 1)  # a strawman: once
    unguided_times, _ = timed(lambda: decode(beam_search, None), 0 if token_bias is None else args.repeats)
    unconstrained_times, _ = timed(lambda: decode(beam_search, token_bias, None), 0 if required is None else args.repeats)
    hf_times, hf_best = timed(hf_decode, 0 if prompts or token_bias is not None or required is not None else args.repeats)
    batched_s = statistics.median(batched_times)
    lengths = [len(c.token_ids) for image in batched for c in image]

    print(
        f"preset={args.preset} device={model.device} dtype={next(model.lm.parameters()).dtype} "
        f"threads={torch.get_num_threads()} batch={args.batch} beams={decoding.num_beams} "
        f"max_new_tokens={args.max_new_tokens} prompts={'mixed' if prompts else 'none'} "
        f"image_word_guidance={'off' if token_bias is None else 'on'} "
        f"scene_constraint={'off' if required is None else f'on ({sum(map(bool, required))} of {args.batch} images)'}"
    )
    print(f"load_s={load_s:.1f} encode_s={encode_s:.2f} mean_caption_tokens={statistics.mean(lengths):.1f}")
    print(f"batched_s={batched_s:.3f} runs={[round(t, 3) for t in batched_times]}")
    if unguided_times:
        unguided_s = statistics.median(unguided_times)
        print(f"batched_unguided_s={unguided_s:.3f} runs={[round(t, 3) for t in unguided_times]} "
              f"guidance_cost={batched_s / unguided_s:.2f}")
    if unconstrained_times:
        unconstrained_s = statistics.median(unconstrained_times)
        print(f"batched_unconstrained_s={unconstrained_s:.3f} runs={[round(t, 3) for t in unconstrained_times]} "
              f"constraint_cost={batched_s / unconstrained_s:.2f}")
    if naive_times:
        naive_s = statistics.median(naive_times)
        print(f"naive_s={naive_s:.3f} runs={[round(t, 3) for t in naive_times]}")
        speedup_naive, identical = f"{naive_s / batched_s:.2f}", str(same_outputs(batched, naive)).lower()
    else:
        speedup_naive, identical = "skipped", "unchecked"
    if hf_times:
        hf_s = statistics.median(hf_times)
        agree = sum(tuple(ours[0].token_ids) == theirs for ours, theirs in zip(batched, hf_best)) / len(batched)
        print(f"hf_generate_s={hf_s:.3f} runs={[round(t, 3) for t in hf_times]} best_caption_agrees_with_hf={agree:.2f}")
        speedup_hf = f"{hf_s / batched_s:.2f}"
    else:
        speedup_hf = "skipped (prompts)" if prompts else "skipped (image word guidance or scene constraint)"
    print(f"example: {model.tokenizer.decode(list(batched[0][0].token_ids)).strip()!r}")
    if args.profile:
        print_profile(lambda: decode(beam_search), model.device)
    print(
        f"speedup_vs_naive={speedup_naive} speedup_vs_hf={speedup_hf} identical={identical} "
        f"captions_per_s={args.batch / batched_s:.2f}"
    )


if __name__ == "__main__":
    main()
