import re
import subprocess
import sys

import pytest


@pytest.mark.integration
@pytest.mark.slow  # a fresh process: broker, tiny model, worker, ~30 s
def test_demo_runs_end_to_end_and_exits_zero():
    result = subprocess.run(
        [sys.executable, "-m", "worker.cli", "demo", "--preset", "tiny", "--device", "cpu", "--users", "2", "--posts-per-user", "2"],
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
