"""The shipped Grafana files agree with each other and with docker-compose.yml (their queries run live in
tests/worker/test_prometheus.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"


def dashboard() -> dict:
    return json.loads((GRAFANA / "dashboards" / "uapt.json").read_text())


def test_every_panel_uses_the_provisioned_datasource() -> None:
    (source,) = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())["datasources"]
    panels = dashboard()["panels"]
    assert panels
    for panel in panels:
        refs = [panel["datasource"], *(target["datasource"] for target in panel["targets"])]
        assert all(ref == {"type": source["type"], "uid": source["uid"]} for ref in refs), panel["title"]
    ids = [panel["id"] for panel in panels]
    assert len(set(ids)) == len(ids)


def test_compose_mounts_what_the_provisioning_reads() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    (provider,) = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "uapt.yml").read_text())["providers"]
    grafana_mounts = dict(volume.removesuffix(":ro").split(":") for volume in services["grafana"]["volumes"])
    assert grafana_mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    assert grafana_mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    prometheus_mounts = dict(volume.removesuffix(":ro").split(":") for volume in services["prometheus"]["volumes"])
    assert prometheus_mounts["./deploy/prometheus"] == "/etc/prometheus"  # the image's default config folder


def test_dashboard_covers_the_worker_metrics() -> None:
    used = " ".join(target["expr"] for panel in dashboard()["panels"] for target in panel["targets"])
    for metric in (
        "uapt_events_consumed_total",
        "uapt_captions_produced_total",
        "uapt_failures_total",
        "uapt_stage_seconds_bucket",
        "uapt_end_to_end_seconds_bucket",
        "uapt_batch_size_bucket",
        "uapt_consumer_lag",
        "uapt_model_info",
        "uapt_ready",
        "uapt_erasures_total",
        "uapt_db_retries_total",
        "uapt_db_wait_seconds_total",
        "uapt_batch_age_seconds",
        "uapt_abstentions_total",
        "uapt_ood_score_bucket",
        "uapt_caption_confidence_bucket",
    ):
        assert re.search(rf"\b{metric}\b", used), f"no dashboard panel shows {metric}"
