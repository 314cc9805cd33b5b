"""The shipped Prometheus files, through promtool: the config and rules load, and every alert's unit tests pass."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

PROMETHEUS_DIR = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool not installed (Debian package prometheus; .ci/run installs it)")
    return found


def run_promtool(promtool: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([promtool, *args], cwd=PROMETHEUS_DIR, capture_output=True, text=True, timeout=120)


def test_config_and_rules_pass_promtool_check(promtool: str) -> None:
    for args in (("check", "config", "prometheus.yml"), ("check", "rules", "alerts.yml")):
        done = run_promtool(promtool, *args)
        assert done.returncode == 0, done.stdout + done.stderr


def test_alert_unit_tests_pass(promtool: str) -> None:
    done = run_promtool(promtool, "test", "rules", "alerts_test.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_has_a_firing_unit_test() -> None:
    """A rule without a case that fires could be dead (a misspelt metric never matches) and still pass."""
    rules = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"] if "alert" in rule}
    cases = yaml.safe_load((PROMETHEUS_DIR / "alerts_test.yml").read_text())["tests"]
    fired = {check["alertname"] for case in cases for check in case["alert_rule_test"] if check["exp_alerts"]}
    quiet = {check["alertname"] for case in cases for check in case["alert_rule_test"] if not check["exp_alerts"]}
    assert alerts - fired == set(), "alerts with no unit test in which they fire"
    assert alerts - quiet == set(), "alerts with no unit test in which they stay quiet"
