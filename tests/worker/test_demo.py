import re
import subprocess
import sys

import pytest


@pytest.mark.integration
@pytest.mark.slow  # a fresh process: broker, tiny model, worker, ~30 s
def test_demo_runs_end_to_end_and_exits_zero():
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", "demo", "--preset", "tiny", "--device", "cpu", "--users", "2", "--posts-per-user", "2"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "Traceback" not in result.stderr
    for user in ("user0", "user1"):
        match = re.search(rf"^{user}\s+keywords: (.+)$", out, re.MULTILINE)
        assert match and match.group(1) != "(none)", out  # history was folded before the new posts
    assert len(re.findall(r"they wrote:", out)) == 4
    assert "model: tiny:untrained" in out
    # all 8 users' 14 train posts each, not only the 2 shown: TF-IDF keywords depend on every user
    assert "demo: 112 past posts of 8 synthetic users folded into their profiles; showing 2 of them" in out, out


def test_offline_demo_defaults_to_the_committed_checkpoint(tmp_path):
    from cli.demo import DEMO_CHECKPOINT, default_checkpoint

    assert DEMO_CHECKPOINT.is_dir(), "checkpoints/demo-offline is part of the repository"
    assert default_checkpoint("offline", None, untrained=False) == str(DEMO_CHECKPOINT)
    assert default_checkpoint("offline", str(tmp_path), untrained=False) == str(tmp_path)
    assert default_checkpoint("offline", None, untrained=True) is None
    assert default_checkpoint("tiny", None, untrained=False) is None


@pytest.mark.integration
@pytest.mark.slow  # the README's main-job command: offline preset (EfficientNet-Lite0, MiniLM, SmolLM2) with the demo checkpoint
def test_readme_demo_runs_with_the_trained_checkpoint():
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", "demo", "--users", "2", "--posts-per-user", "1"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert re.search(r"^model: demo-offline@[0-9a-f]{12}$", result.stdout, re.MULTILINE), result.stdout
    assert len(re.findall(r"they wrote:", result.stdout)) == 2
    assert "Converting and de-quantizing" not in result.stderr  # one status line, no library progress bars
