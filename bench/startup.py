"""Benchmark: how fast a worker is up after a crash, deploy or rescale.

    .venv/bin/python -m bench.startup --preset offline --checkpoint checkpoints/demo-offline

Three figures, each from fresh child processes, as a restarted worker would be:

- cold_load_s, the baseline: `load_model` with an empty LM cache, so the GGUF is
  de-quantized as it was on every start before the cache existed;
- load_s: `load_model` with a warm cache (imports excluded; import_s is printed beside it);
- first_caption_s: from starting `uapt worker` (a new process) to reading its first caption
  from the output topic of the real embedded broker, with one post already waiting;
  the worker's log lines follow, each with its seconds since the launch.

Load figures are medians of --repeats processes. The last line is machine-readable:

    load_s=<x> first_caption_s=<y>
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.worker import fresh_settings, sample_posts
from worker.broker import EmbeddedBroker
from worker.events import post_event
from worker.kafka_io import ensure_worker_topics, make_consumer, make_producer

LOAD_PROBE = """
import json, sys, time
started = time.perf_counter()
from model.factory import load_model
imported = time.perf_counter()
load_model(sys.argv[1], checkpoint=sys.argv[2] or None, device="cpu")
print(json.dumps({"import_s": imported - started, "load_s": time.perf_counter() - imported}))
"""


def timed_load(preset: str, checkpoint: str | None, env: dict[str, str]) -> dict[str, float]:
    """Import and load times of one fresh process."""
    done = subprocess.run(
        [sys.executable, "-c", LOAD_PROBE, preset, checkpoint or ""],
        env=env, capture_output=True, text=True, check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"bench.startup: loading the model failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def first_caption_s(bootstrap: str, preset: str, checkpoint: str | None, workdir: Path, timeout_s: float) -> float:
    """Seconds from launching a worker process to reading its caption of a post that waits on the input topic.

    Also prints the worker's log lines up to then, each with its seconds since the launch: where the time went.
    """
    settings = fresh_settings(bootstrap, "startup", workdir)
    ensure_worker_topics(settings)
    post_id, user_id, png, text = sample_posts(1, users=1, seed=0)[0]
    producer = make_producer(bootstrap, security=settings.kafka_security)
    producer.send(settings.input_topic, key=user_id.encode(), value=post_event(post_id, user_id, image_bytes=png, text=text))
    producer.flush()
    producer.close()
    reader = make_consumer(bootstrap, None, security=settings.kafka_security)
    reader.subscribe([settings.output_topic])

    command = [
        str(Path(sys.executable).with_name("uapt")), "worker",
        "--bootstrap-servers", bootstrap,
        "--input-topic", settings.input_topic,
        "--output-topic", settings.output_topic,
        "--dlq-topic", settings.dlq_topic,
        "--group-id", settings.group_id,
        "--database-url", settings.database_url,
        "--metrics-port", str(settings.metrics_port),
        "--preset", preset,
    ] + (["--checkpoint", checkpoint] if checkpoint else [])
    log_path = workdir / f"worker-{settings.group_id}.log"
    with log_path.open("w") as log:
        started, launched_at = time.perf_counter(), datetime.datetime.now()
        worker = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            while time.perf_counter() - started < timeout_s:
                if worker.poll() is not None:
                    raise SystemExit(f"bench.startup: the worker exited ({worker.returncode}):\n{log_path.read_text()[-2000:]}")
                for records in reader.poll(timeout_ms=100).values():
                    if any(json.loads(r.value)["post_id"] == post_id for r in records):
                        took = time.perf_counter() - started
                        print_timeline(log_path.read_text(), launched_at)
                        return took
            raise SystemExit(f"bench.startup: no caption within {timeout_s:.0f} s:\n{log_path.read_text()[-2000:]}")
        finally:
            worker.terminate()
            worker.wait(timeout=60)
            reader.close()


def print_timeline(log_text: str, launched_at: datetime.datetime) -> None:
    """The worker's log lines (logging's default asctime first), each led by its seconds since the launch."""
    print("worker log, seconds since launch:")
    for line in log_text.splitlines():
        try:
            logged_at = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
        except ValueError:
            continue  # a library's progress bar or a continuation line
        print(f"  {(logged_at - launched_at).total_seconds():6.2f}  {line[24:124]}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.startup", description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="offline", help="model preset (default: offline)")
    parser.add_argument("--checkpoint", default=None, help="trained checkpoint directory")
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per load figure (default: 3)")
    parser.add_argument("--timeout-s", type=float, default=300, help="give up on the first caption after this (default: 300)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="uapt-startup-") as tmp:
        cold_env = {**os.environ, "UAPT_LM_CACHE_DIR": str(Path(tmp) / "empty-lm-cache")}
        cold = timed_load(args.preset, args.checkpoint, cold_env)["load_s"]  # also the baseline: no cache at all
        timed_load(args.preset, args.checkpoint, dict(os.environ))  # writes the default cache if it is missing
        warm = [timed_load(args.preset, args.checkpoint, dict(os.environ)) for _ in range(args.repeats)]
        load_s = statistics.median(w["load_s"] for w in warm)
        import_s = statistics.median(w["import_s"] for w in warm)
        with EmbeddedBroker() as broker:
            first_s = first_caption_s(broker.bootstrap_servers, args.preset, args.checkpoint, Path(tmp), args.timeout_s)

    print(f"bench.startup: preset={args.preset} checkpoint={args.checkpoint} cpus={os.cpu_count()}")
    print(f"cold_load_s={cold:.1f} (baseline: empty LM cache, GGUF de-quantized)")
    print(f"warm load runs={[round(w['load_s'], 2) for w in warm]} import_s={import_s:.1f}")
    print(f"speed-up of a warm load: x{cold / load_s:.1f}")
    print(f"load_s={load_s:.2f} first_caption_s={first_s:.1f}")


if __name__ == "__main__":
    main()
