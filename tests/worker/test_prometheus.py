"""A real Prometheus server scrapes a running worker: the metrics, the alert rules and every dashboard query, live.

The server runs deploy/prometheus/prometheus.yml, with its service discovery
replaced by the test worker's address and a 1 s scrape interval, and loads the
shipped alert rules. It is the Debian `prometheus` binary (.ci/run installs it).
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from worker_samples import captions_by_post, good_posts, publish, read_topic, running_worker

from worker.broker import free_port
from worker.events import forget_event
from worker.kafka_io import ensure_topics
from worker.settings import Settings
from worker.stages import Stage

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # ~30 s: the server must scrape before and after the posts

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "uapt.json"
RATE_WINDOW = "1m"
GRAFANA_VARIABLES = {"$__rate_interval": RATE_WINDOW}  # what Grafana would substitute, at this test's scale
POSTS = 12
BAD_EVENTS = [b"{this is not json", b"[1, 2, 3]"]

Series = list[dict]


class PrometheusApi:
    """The few HTTP API calls the tests need."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def _get(self, path: str, **params: str) -> dict:
        url = f"{self.base_url}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as answer:
                body = json.load(answer)
        except urllib.error.HTTPError as error:  # a bad query answers 400 with the parser's message
            body = json.load(error)
        assert body["status"] == "success", f"{path} {params}: {body.get('errorType')}: {body.get('error')}"
        return body["data"]

    def query(self, expr: str) -> Series:
        return self._get("/api/v1/query", query=expr)["result"]

    def rules(self) -> list[dict]:
        return [rule for group in self._get("/api/v1/rules")["groups"] for rule in group["rules"]]

    def wait_for(self, expr: str, done: Callable[[Series], bool], timeout_s: float = 60.0) -> Series:
        deadline = time.monotonic() + timeout_s
        result = self.query(expr)
        while not done(result):
            assert time.monotonic() < deadline, f"{expr} never held; last answer {result}"
            time.sleep(0.5)
            result = self.query(expr)
        return result


def value(series: Series) -> float:
    (only,) = series
    return float(only["value"][1])


def scrape_config(target: str, tmp_path: Path) -> Path:
    """The shipped config, pointed at one worker, scraping every second."""
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(DEPLOY / "prometheus" / name) for name in config["rule_files"]]
    (job,) = config["scrape_configs"]
    del job["dns_sd_configs"]
    job["static_configs"] = [{"targets": [target]}]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@contextmanager
def prometheus_server(binary: str, target: str, tmp_path: Path) -> Iterator[PrometheusApi]:
    port = free_port()
    log_path = tmp_path / "prometheus.log"
    command = [
        binary,
        f"--config.file={scrape_config(target, tmp_path)}",
        f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, f"prometheus exited: {log_path.read_text()[-2000:]}"
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2).status == 200:
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            assert time.monotonic() < deadline, f"prometheus never became ready: {log_path.read_text()[-2000:]}"
            time.sleep(0.2)
        yield PrometheusApi(f"http://127.0.0.1:{port}")
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def live(broker: str, captioner, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PrometheusApi, Settings]]:
    """A worker that has captioned POSTS posts, dead-lettered BAD_EVENTS and applied a forget event,
    with Prometheus scraping it throughout."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("the prometheus server is not installed (Debian package prometheus; .ci/run installs it)")
    tmp_path = tmp_path_factory.mktemp("prometheus")
    tag = uuid.uuid4().hex[:8]
    settings = Settings(
        bootstrap_servers=broker,
        input_topic=f"posts-{tag}",
        output_topic=f"captions-{tag}",
        dlq_topic=f"dlq-{tag}",
        group_id=f"group-{tag}",
        create_topics=False,
        database_url=f"sqlite:///{tmp_path / 'profiles.db'}",
        preset="tiny",
        metrics_port=0,
        batch_size=4,
        linger_ms=100,
        num_captions=1,
    )
    ensure_topics(broker, [settings.input_topic, settings.output_topic, settings.dlq_topic], partitions=4, security=settings.kafka_security)
    with running_worker(settings, captioner) as worker, prometheus_server(binary, f"127.0.0.1:{worker['port']}", tmp_path) as api:
        # a first scrape before any post, so every rate() below sees its counters rise
        api.wait_for('uapt_ready{job="uapt-worker"}', lambda r: r != [] and value(r) == 1)
        messages = good_posts(POSTS) + [(b"mallory", bad) for bad in BAD_EVENTS] + [(b"user0", forget_event("user0"))]
        publish(broker, settings.input_topic, messages)
        outputs = read_topic(broker, settings.output_topic, until=lambda r: len(captions_by_post(r)) >= POSTS)
        assert len(captions_by_post(outputs)) == POSTS
        api.wait_for("uapt_captions_produced_total", lambda r: r != [] and value(r) == POSTS)
        api.wait_for("sum(uapt_failures_total)", lambda r: r != [] and value(r) == len(BAD_EVENTS))
        api.wait_for("uapt_erasures_total", lambda r: r != [] and value(r) == 1)
        # rate() needs two samples in its window, and the failures must be among them
        api.wait_for(f"min(count_over_time(uapt_failures_total[{RATE_WINDOW}]))", lambda r: value(r) >= 3)
        yield api, settings


def test_prometheus_scrapes_captions_stage_quantiles_and_lag(live: tuple[PrometheusApi, Settings]) -> None:
    api, settings = live
    assert value(api.query('up{job="uapt-worker"}')) == 1
    assert value(api.query("uapt_events_consumed_total")) == POSTS + len(BAD_EVENTS) + 1

    stages = api.query(f"histogram_quantile(0.99, sum by (le, stage) (rate(uapt_stage_seconds_bucket[{RATE_WINDOW}])))")
    p99 = {series["metric"]["stage"]: float(series["value"][1]) for series in stages}
    assert set(p99) == {str(stage) for stage in Stage}
    assert all(math.isfinite(seconds) and seconds >= 0 for seconds in p99.values()), p99

    end_to_end = value(api.query(f"histogram_quantile(0.99, sum by (le) (rate(uapt_end_to_end_seconds_bucket[{RATE_WINDOW}])))"))
    assert 0 < end_to_end < 120

    lag = api.wait_for(f'uapt_consumer_lag{{topic="{settings.input_topic}"}}', lambda r: r != [])
    assert {series["metric"]["partition"] for series in lag} <= {"0", "1", "2", "3"}
    assert all(float(series["value"][1]) >= 0 for series in lag)


def test_alert_rules_evaluate_on_the_real_metrics(live: tuple[PrometheusApi, Settings]) -> None:
    """Every shipped rule evaluates without error, and the worker's input sets off exactly the rule it should.

    Each of the two bad events is 1/15 of the input, above the dead-letter rule's 5%, so that
    rule goes pending once per reason; nothing else fires, not even pending. (Before every
    reason's series existed from the start, rate() missed a reason's first failures and
    this alert stayed silent.)
    """
    api, _ = live
    rules = api.rules()
    shipped = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    assert len(rules) == sum(len(group["rules"]) for group in shipped["groups"])
    assert all(rule["health"] == "ok" for rule in rules), [
        (rule["name"], rule.get("lastError")) for rule in rules
    ]
    dead_letter_reasons = {"not_json", "not_object"}
    pending = api.wait_for("ALERTS", lambda r: {s["metric"].get("reason") for s in r} >= dead_letter_reasons)
    assert sorted((s["metric"]["alertname"], s["metric"].get("reason")) for s in pending) == [
        ("UaptDeadLetterRateHigh", reason) for reason in sorted(dead_letter_reasons)
    ]
    # a misspelt metric would evaluate cleanly to nothing (and pass promtool's tests, which use the same name)
    named = {name for rule in rules for name in re.findall(r"\b(?:uapt_\w+|up)\b", rule["query"])}
    assert {"up", "uapt_ready", "uapt_consumer_lag", "uapt_failures_total", "uapt_db_retries_total"} <= named
    missing = [name for name in sorted(named) if not api.query(f'count({{__name__="{name}"}})')]
    assert missing == [], "alert rules name metrics the worker does not export"


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target of every panel, Grafana's variables substituted."""
    queries = []
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, replacement in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, replacement)
            assert "$" not in expr, f"{panel['title']}: a Grafana variable this test does not substitute: {expr}"
            queries.append((panel["title"], expr))
    return queries


def test_every_dashboard_query_parses_and_returns_series(live: tuple[PrometheusApi, Settings]) -> None:
    api, _ = live
    queries = dashboard_queries()
    assert len(queries) >= 10
    empty = [(title, expr) for title, expr in queries if not api.query(expr)]
    assert empty == [], f"dashboard queries with no series against a live worker: {empty}"
