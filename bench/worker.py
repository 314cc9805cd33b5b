"""Throughput and latency of the worker through the real embedded broker, micro-batched vs batch size 1,
pipelined vs one stage after another, against bare generation.

    .venv/bin/python -m bench.worker --preset tiny [--posts 200] [--batch-size 16]
    .venv/bin/python -m bench.worker --preset offline --checkpoint checkpoints/demo-offline \
        --device cuda --posts 4000 --batch-size 256 --runs pipelined      # a GPU worker

One model is loaded and shared by all runs. The worker runs three times (batch size 1;
the batch size under test without pipelining, ``--pipeline-depth 0``; and with
it, the default); each run gets its own topics, consumer group and SQLite
store, and starts once the worker has joined its group. Latency is per post,
from the moment the producer sent it to the moment its caption was read back
from the output topic. The worker runs in this process (a thread), so the
producer and reader share its CPU, as a sidecar would. Then bare generation:
`Captioner.caption` on the same images (decoded beforehand), in batches of
the same size, with the keywords the pipelined run captioned each post with:
the model alone, the most the worker could reach. `--runs pipelined` keeps
only the pipelined run (large bursts on a GPU, where the batch-size-1 run
would take long and says little). On CUDA, the GPU's utilisation is sampled
through the pipelined run (NVML, as nvidia-smi reads it). The last line is
`posts_per_s=<x> p50_ms=<y> p99_ms=<z> batch_mean=<b> pipeline_efficiency=<e>`
for the pipelined micro-batched run, where e is its posts/s over bare
generation's captions/s, followed on CUDA by `gpu_util=<mean %>`.

`--null-model` measures the worker's ceiling instead: everything but the
networks (broker, events, image decoding and the preset's preprocessing,
profiles, outputs) with a stand-in that answers at once (`NullCaptioner`), so
no model can make the worker faster than this on this CPU. Its last line ends
`model=null` instead of the efficiency.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import random
import statistics
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import torch
from PIL import Image, ImageDraw
from prometheus_client.parser import text_string_to_metric_families

from model.guidance.abstention import Judgement
from model.uapt import Caption
from worker.broker import EmbeddedBroker
from worker.events import post_event
from worker.kafka_io import ensure_worker_topics, make_consumer, make_producer
from worker.kafka_security import KafkaSecurity
from worker.service import load_captioner, run_worker
from worker.settings import Settings, default_of

log = logging.getLogger("bench.worker")


RUNS = ("single", "sequential", "pipelined")  # batch size 1; the batch size without pipelining; with it


@dataclass(frozen=True)
class RunResult:
    batch_size: int
    posts_per_s: float
    p50_ms: float
    p99_ms: float
    batch_mean: float
    keywords: dict[str, list[str]]  # post_id -> the keywords its caption was made with
    gpu_util: float | None = None  # mean GPU utilisation (%) through the run, on CUDA

    def line(self) -> str:
        return (
            f"posts_per_s={self.posts_per_s:.2f} p50_ms={self.p50_ms:.0f} "
            f"p99_ms={self.p99_ms:.0f} batch_mean={self.batch_mean:.2f}"
        )


class NullCaptioner:
    """A stand-in for `Captioner` whose networks cost nothing: the preset's image preprocessing runs, then fixed
    captions come back at once. It bounds what the worker around a model can do (`--null-model`)."""

    model_id = "null"
    serving_dtype = "none"

    def __init__(self, preset: str) -> None:
        from model.config import get_config
        from model.encoders import build_encoders

        self.image_encoder, _ = build_encoders(get_config(preset))
        self.model = SimpleNamespace(device=torch.device("cpu"))

    def encode_images(self, images):
        return list(self.image_encoder.pixels(images)[:, :1, :1, :1].unbind(0))  # preprocessed, never encoded

    def caption_encoded(self, image_features, keywords, num_captions: int = 3):
        return [[Caption(f"caption {rank}", -1.0 - rank, [rank]) for rank in range(num_captions)] for _ in image_features]

    def judge(self, image_features, captions):
        return [Judgement(None, None) for _ in captions]


def sample_posts(n: int, users: int, seed: int) -> list[tuple[str, str, bytes, str]]:
    """(post_id, user_id, png bytes, text): simple drawn scenes, a small vocabulary per user."""
    rng = random.Random(seed)
    words = "sun beach city night coffee dog cat hike lake snow party food art music rain".split()
    posts = []
    for i in range(n):
        image = Image.new("RGB", (224, 224), tuple(rng.randrange(256) for _ in range(3)))
        draw = ImageDraw.Draw(image)
        for _ in range(3):
            x, y = rng.randrange(180), rng.randrange(180)
            draw.ellipse((x, y, x + 40, y + 40), fill=tuple(rng.randrange(256) for _ in range(3)))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        user = f"user{i % users}"
        posts.append((f"post{i}", user, buffer.getvalue(), " ".join(rng.sample(words, 3))))
    return posts


def bare_generation(captioner, posts, keywords: dict[str, list[str]], batch_size: int, num_captions: int) -> float:
    """Captions/s of the model alone: `Captioner.caption` on the posts' images with the keywords
    the worker used for them (caption length, hence time, depends on both), ``batch_size`` at a time.

    It runs on a thread of its own, as the worker's generation does: torch on the main thread can
    run at another speed (much slower here while another process keeps the cores busy).
    """
    images = [Image.open(io.BytesIO(png)).convert("RGB") for _, _, png, _ in posts]
    keywords = [keywords[post_id] for post_id, _, _, _ in posts]
    elapsed: list[float] = []

    def generate() -> None:
        start = time.perf_counter()
        for at in range(0, len(posts), batch_size):
            captioner.caption(images[at : at + batch_size], keywords[at : at + batch_size], num_captions=num_captions)
        elapsed.append(time.perf_counter() - start)

    thread = threading.Thread(target=generate, name="bench-bare-generation")
    thread.start()
    thread.join()
    return len(posts) / elapsed[0]


@contextmanager
def image_host(posts, latency_ms: int) -> Iterator[str | None]:
    """Serve each post's image at ``<base>/<post_id>.png``, answering after ``latency_ms`` as a remote
    image host would; yields the base URL, or None when ``latency_ms`` is 0 (images go inline)."""
    if latency_ms <= 0:
        yield None
        return
    images = {f"/{post_id}.png": png for post_id, _, png, _ in posts}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            time.sleep(latency_ms / 1000)
            body = images.get(self.path)
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True, name="bench-image-host").start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def fresh_settings(bootstrap: str, name: str, workdir: Path, **overrides) -> Settings:
    """Worker settings with topics, a consumer group and a SQLite store of their own, so runs
    that share one broker never read each other's posts (the caller creates the topics)."""
    tag = f"{name}-{uuid.uuid4().hex[:8]}"
    return Settings(
        bootstrap_servers=bootstrap,
        input_topic=f"{tag}-posts",
        output_topic=f"{tag}-captions",
        dlq_topic=f"{tag}-dlq",
        group_id=tag,
        create_topics=False,
        database_url=f"sqlite:///{workdir / f'profiles-{tag}.db'}",
        metrics_port=0,
        **overrides,
    )


class GpuUtilisation:
    """Samples the CUDA device's utilisation (NVML, as nvidia-smi reads it) on a thread until stopped."""

    def __init__(self, device, interval_s: float = 0.2) -> None:
        self._read = lambda: torch.cuda.utilization(device)
        self._interval_s = interval_s
        self._samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="bench-gpu-util")

    def __enter__(self) -> GpuUtilisation:
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self._samples.append(float(self._read()))

    def mean(self) -> float | None:
        return statistics.fmean(self._samples) if self._samples else None


def run_once(
    bootstrap: str, captioner, posts, *, batch_size: int, pipeline_depth: int, linger_ms: int, rate: float,
    workdir: Path, image_base: str | None,
) -> RunResult:
    settings = fresh_settings(
        bootstrap,
        f"bench-{batch_size}-{pipeline_depth}",
        workdir,
        batch_size=batch_size,
        pipeline_depth=pipeline_depth,
        linger_ms=linger_ms,
        allow_hosts=("127.0.0.1",) if image_base else (),
    )
    device = captioner.model.device
    sampler = GpuUtilisation(device) if device.type == "cuda" else nullcontext()
    ensure_worker_topics(settings)

    stop, ready = threading.Event(), threading.Event()
    status: dict = {}

    def on_ready(server) -> None:
        status["port"] = server.port
        ready.set()

    def worker() -> None:
        run_worker(settings, captioner=captioner, stop=stop, on_ready=on_ready)

    thread = threading.Thread(target=worker, name=f"bench-worker-{batch_size}")
    thread.start()
    reader = make_consumer(bootstrap, None, security=settings.kafka_security)
    reader.subscribe([settings.output_topic])
    try:
        if not ready.wait(120):
            raise SystemExit("bench.worker: the worker did not start")
        _wait_ready(status["port"])
        sent_at: dict[str, float] = {}
        received_at: dict[str, float] = {}
        keywords: dict[str, list[str]] = {}
        # Publish from a thread so that captions are read (and timed) while posts still go out.
        publisher = threading.Thread(
            target=_publish, args=(bootstrap, settings.input_topic, posts, rate, sent_at, image_base)
        )
        deadline = time.monotonic() + 60 + 10 * len(posts)
        with sampler:
            publisher.start()
            while len(received_at) < len(posts):
                if time.monotonic() > deadline:
                    raise SystemExit(f"bench.worker: only {len(received_at)} of {len(posts)} captions arrived")
                for batch in reader.poll(timeout_ms=200).values():
                    now = time.perf_counter()
                    for record in batch:
                        caption = json.loads(record.value)
                        received_at.setdefault(caption["post_id"], now)
                        keywords.setdefault(caption["post_id"], caption["keywords"])
        publisher.join()
        batch_mean = _batch_mean(status["port"])
    finally:
        stop.set()
        thread.join(timeout=120)
        reader.close()

    latencies_ms = sorted((received_at[p] - sent_at[p]) * 1000 for p in sent_at)
    elapsed = max(received_at.values()) - min(sent_at.values())
    return RunResult(
        batch_size=batch_size,
        posts_per_s=len(posts) / elapsed,
        p50_ms=statistics.median(latencies_ms),
        p99_ms=latencies_ms[min(len(latencies_ms) - 1, round(0.99 * (len(latencies_ms) - 1)))],
        batch_mean=batch_mean,
        keywords=keywords,
        gpu_util=sampler.mean() if isinstance(sampler, GpuUtilisation) else None,
    )


def _publish(bootstrap: str, topic: str, posts, rate: float, sent_at: dict[str, float], image_base: str | None) -> None:
    """Send every post, paced at ``rate`` posts/s (0: as fast as possible), noting each send time;
    its image inline, or as a URL under ``image_base``."""
    producer = make_producer(bootstrap, security=KafkaSecurity())  # the embedded broker
    start = time.perf_counter()
    for i, (post_id, user_id, png, text) in enumerate(posts):
        if rate > 0:  # post i leaves at start + i / rate
            time.sleep(max(0.0, start + i / rate - time.perf_counter()))
        if image_base:
            value = post_event(post_id, user_id, image_url=f"{image_base}/{post_id}.png", text=text)
        else:
            value = post_event(post_id, user_id, image_bytes=png, text=text)
        sent_at[post_id] = time.perf_counter()
        producer.send(topic, key=user_id.encode(), value=value)
    producer.flush()
    producer.close()


def _wait_ready(port: int, timeout_s: float = 120) -> None:
    """Wait for /readyz (model loaded, partitions assigned) so timing starts with a consumer in place."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5).status == 200:
                return
        except urllib.error.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit("bench.worker: the worker did not become ready in time")


def _batch_mean(port: int) -> float:
    """Mean micro-batch size, from the worker's own /metrics histogram."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    samples = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
    return samples["uapt_batch_size_sum"] / max(1.0, samples["uapt_batch_size_count"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.worker", description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny", help="model preset: tiny (default) or offline")
    parser.add_argument("--checkpoint", default=None, help="trained checkpoint directory")
    parser.add_argument("--posts", type=int, default=200, help="posts per run (default: 200)")
    parser.add_argument("--users", type=int, default=20, help="distinct users (default: 20)")
    parser.add_argument("--batch-size", type=int, default=16, help="micro-batch size under test (default: 16)")
    parser.add_argument("--linger-ms", type=int, default=200, help="micro-batch linger (default: 200)")
    parser.add_argument("--rate", type=float, default=0, help="posts per second to publish (default 0: all at once, a burst)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample posts (default: 0)")
    parser.add_argument("--device", default=default_of("device"), help="torch device: auto (default), cpu, cuda")
    parser.add_argument(
        "--serving-dtype", default=default_of("serving_dtype"),
        help=f"the frozen LM's dtype: auto, float32, bfloat16, int8 (default: {default_of('serving_dtype')})",
    )
    parser.add_argument(
        "--null-model", action="store_true",
        help="the worker's ceiling: networks that answer at once, image decoding and preprocessing kept (NullCaptioner)",
    )
    parser.add_argument(
        "--runs", default=",".join(RUNS),
        help="which worker runs, of single (batch size 1), sequential (pipeline depth 0) and pipelined; "
        "pipelined always runs (default: all three)",
    )
    parser.add_argument(
        "--image-latency-ms", type=int, default=0,
        help="send images as URLs of a local host that answers each after this long (default 0: inline images)",
    )
    args = parser.parse_args(argv)
    runs = {name.strip() for name in args.runs.split(",") if name.strip()} | {"pipelined"}
    if runs - set(RUNS):
        parser.error(f"--runs takes {', '.join(RUNS)}; not {', '.join(sorted(runs - set(RUNS)))}")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    posts = sample_posts(args.posts, args.users, args.seed)
    if args.null_model:
        captioner = NullCaptioner(args.preset)
    else:
        captioner = load_captioner(
            Settings(preset=args.preset, checkpoint=args.checkpoint, device=args.device, serving_dtype=args.serving_dtype)
        )
        captioner.caption([Image.new("RGB", (224, 224))], [["warm", "up"]], num_captions=3)  # first call pays one-off costs
    load = f"{args.rate:g} posts/s" if args.rate > 0 else "burst"
    images = f"URLs answering after {args.image_latency_ms} ms" if args.image_latency_ms > 0 else "inline"
    print(
        f"bench.worker: preset={args.preset} model={captioner.model_id} device={captioner.model.device} "
        f"serving_dtype={captioner.serving_dtype} posts={args.posts} users={args.users} load={load} images={images}",
        flush=True,
    )
    shapes = {"single": (1, 1), "sequential": (args.batch_size, 0), "pipelined": (args.batch_size, 1)}
    with (
        EmbeddedBroker() as broker,
        tempfile.TemporaryDirectory(prefix="uapt-bench-") as tmp,
        image_host(posts, args.image_latency_ms) as image_base,
    ):
        results = {
            name: run_once(
                broker.bootstrap_servers, captioner, posts, batch_size=shapes[name][0], pipeline_depth=shapes[name][1],
                linger_ms=args.linger_ms, rate=args.rate, workdir=Path(tmp), image_base=image_base,
            )
            for name in RUNS
            if name in runs
        }
    pipelined = results["pipelined"]
    if args.null_model:
        print(f"{pipelined.line()} model=null")
        return
    bare = bare_generation(captioner, posts, pipelined.keywords, args.batch_size, default_of("num_captions"))
    print(f"bare generation, batch {args.batch_size}: {bare:.2f} captions/s")
    if "single" in results:
        print(f"batch_size=1: {results['single'].line()}")
    if "sequential" in results:
        sequential = results["sequential"]
        print(f"batch_size={sequential.batch_size} pipeline_depth=0: {sequential.line()} "
              f"efficiency={sequential.posts_per_s / bare:.2f}")
    print(f"batch_size={pipelined.batch_size} pipeline_depth=1: {pipelined.line()}")
    if "single" in results:
        print(f"speed-up from micro-batching: x{pipelined.posts_per_s / results['single'].posts_per_s:.2f} throughput")
    if "sequential" in results:
        print(f"speed-up from pipelining: x{pipelined.posts_per_s / results['sequential'].posts_per_s:.2f} throughput")
    gpu = "" if pipelined.gpu_util is None else f" gpu_util={pipelined.gpu_util:.0f}"
    print(f"{pipelined.line()} pipeline_efficiency={pipelined.posts_per_s / bare:.2f}{gpu}")


if __name__ == "__main__":
    main()
