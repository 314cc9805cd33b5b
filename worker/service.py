"""Assembles a running worker from Settings: model, profile store, clients, metrics server, loop."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING

from profiles.errors import DatabaseUnavailable
from profiles.store import ProfileStore
from worker.http import Readiness, StatusServer
from worker.images import ImageLoader
from worker.broker_watch import PROBE_TIMEOUT_MS, BrokerWatch
from worker.kafka_io import check_broker, ensure_worker_topics, make_admin, make_consumer, make_producer
from worker.loop import StopFlag, WorkerLoop
from worker.metrics import WorkerMetrics
from worker.outages import DatabaseWatch
from worker.processing import Processor
from worker.settings import Settings

if TYPE_CHECKING:
    from model.captioner import Captioner

log = logging.getLogger(__name__)


def load_captioner(settings: Settings) -> Captioner:
    """Load the model named by the settings, importing torch and the model stack here: the worker runs this on a
    thread of its own while it joins its consumer group, and the imports are most of the wait."""
    from model.captioner import Captioner
    from model.factory import load_model

    model = load_model(
        settings.preset, checkpoint=settings.checkpoint, device=settings.device, serving_dtype=settings.serving_dtype
    )
    applied = model.applied_decoding(settings.decoding)
    if model.guidance.tagger is not None:
        tagger = model.guidance.tagger
        log.info(
            "image word guidance: weight %g over %d words (0 is off), %d band(s), plausibility gate %g (0 is off)",
            applied.image_word_weight, len(tagger.words), tagger.bands, tagger.plausibility,
        )
    if model.guidance.scene_reader is not None:
        reader = model.guidance.scene_reader
        log.info(
            "scene constraint: %s, %d scenes, where the reader is at least %g sure",
            "on" if applied.scene_constraint else "off", len(reader.scenes), reader.min_confidence,
        )
    captioner = Captioner(
        model, settings.decoding, max_ood_score=settings.max_ood_score, min_confidence=settings.min_confidence
    )
    if captioner.policy is not None:
        log.info(
            "abstention: out_of_distribution above OOD score %g, low_confidence below confidence %g",
            captioner.policy.max_ood_score, captioner.policy.min_confidence,
        )
    return captioner


def run_worker(
    settings: Settings,
    *,
    captioner=None,
    stop: threading.Event | None = None,
    on_ready: Callable[[StatusServer | None], None] | None = None,
) -> int:
    """Run one worker until SIGTERM/SIGINT or ``stop`` is set; returns the exit code (0 = clean stop).

    ``captioner`` lets an in-process caller (demo, benchmark) share one loaded model;
    ``on_ready`` is called with the status server once the loop is about to start.
    """
    stop_flag = StopFlag()
    _install_signal_handlers(stop_flag)
    if stop is not None:
        threading.Thread(target=_relay_stop, args=(stop, stop_flag), daemon=True, name="uapt-stop-relay").start()

    metrics = WorkerMetrics()
    readiness = Readiness()
    metrics.ready.set_function(lambda: float(readiness.ready))  # read at scrape time
    server = None
    if settings.metrics_port >= 0:
        server = StatusServer(metrics, readiness, settings.metrics_host, settings.metrics_port).start()
    store: ProfileStore | None = None
    watch: BrokerWatch | None = None
    security = settings.kafka_security
    try:
        database_watch = DatabaseWatch(readiness, metrics, stop_flag)
        store = ProfileStore(settings.database_url, on_outage=database_watch)
        check_broker(settings.bootstrap_servers, security)  # a refused login or certificate: one line, before the model loads
        if settings.create_topics:
            ensure_worker_topics(settings)

        def ready_processor() -> Processor:
            loaded = captioner
            if loaded is None:
                log.info("loading model preset %r (checkpoint %s)", settings.preset, settings.checkpoint or "none")
                loaded = load_captioner(settings)
            readiness.model_loaded = True
            metrics.model_info.info(
                {
                    "model_id": loaded.model_id,
                    "preset": settings.preset,
                    "checkpoint": str(settings.checkpoint or ""),
                    "serving_dtype": loaded.serving_dtype,
                }
            )
            return Processor(
                loaded,
                store,
                ImageLoader(settings.image_policy),
                num_captions=settings.num_captions,
                max_captions=settings.max_captions,
                top_k=settings.top_k,
                max_attempts=settings.max_record_attempts,
            )

        loop = WorkerLoop(
            settings,
            ready_processor() if captioner is not None else _in_background(ready_processor),
            store,
            make_consumer(
                settings.bootstrap_servers,
                settings.group_id,
                security=security,
                max_poll_records=settings.batch_size,
                max_poll_interval_ms=settings.max_poll_interval_ms,
            ),
            make_producer(settings.bootstrap_servers, security=security, max_request_size=settings.max_message_bytes),
            metrics,
            readiness,
            stop_flag,
        )
        database_watch.wait_in_group = loop.wait_in_group
        watch = BrokerWatch(
            make_admin(settings.bootstrap_servers, security=security, request_timeout_ms=PROBE_TIMEOUT_MS),
            readiness,
            metrics,
        ).start()
        if on_ready is not None:
            on_ready(server)
        loop.run()  # returns at once, closing the clients, if a stop came during start-up
        return 0
    except DatabaseUnavailable:
        if not stop_flag.is_set():
            raise
        log.warning("stopped while waiting for the profile database at start-up")
        return 0
    finally:
        stop_flag.set()  # lets the relay thread end
        if watch is not None:
            watch.stop()
        if store is not None:
            store.close()
        if server is not None:
            server.stop()


def _in_background(make: Callable[[], Processor]) -> Future[Processor]:
    """Run `make` on a daemon thread, so that the loop joins its group meanwhile and a stop need not wait for it."""
    future: Future[Processor] = Future()

    def run() -> None:
        try:
            future.set_result(make())
        except BaseException as exc:  # noqa: BLE001 (re-raised by the loop, on the main thread)
            future.set_exception(exc)

    threading.Thread(target=run, daemon=True, name="uapt-load-model").start()
    return future


def _relay_stop(stop: threading.Event, stop_flag: StopFlag) -> None:
    """Forward an in-process caller's Event to the loop's lock-free flag."""
    while not stop.wait(0.2):
        if stop_flag.is_set():
            return
    stop_flag.set()


def _install_signal_handlers(stop_flag: StopFlag) -> None:
    """SIGTERM/SIGINT ask for a clean stop; only the main thread may install handlers."""
    if threading.current_thread() is not threading.main_thread():
        return

    def handle(signum, _frame) -> None:
        log.info("received %s: finishing the current batch, then stopping", signal.Signals(signum).name)
        stop_flag.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
