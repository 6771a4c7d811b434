"""scripts/calibrate_tracking.py on the embedded model: a tiny run and its report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from server.engine.checkpoint import default_checkpoint_path
from tests.conftest import load_script

pytestmark = pytest.mark.skipif(default_checkpoint_path() is None, reason="embedded generator not built")


def test_a_tiny_calibration_reports_match_by_class_and_threshold(tmp_path: Path) -> None:
    """One face, the optimiser, 5 steps: the report has the match distribution of each class that
    occurred and, per threshold, the shares above it; moved-off windows are sampled every drag."""
    calib = load_script("calibrate_tracking")
    out = tmp_path / "cal.json"
    args = ["--faces", "1", "--methods", "optimize", "--protocols", "pairs", "--max-steps", "5"]
    assert calib.main([*args, "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    s = report["summary"]["optimize"]
    assert s["drags"] == 1 and report["good_px"] == 1.5 * report["resolution"] / 64
    assert s["match"]["moved_off"]["n"] >= 5  # 5 handles, probed after step 1 and at the end
    counted = sum(s["match"][c]["n"] for c in ("tracked", "drifted", "between"))
    assert counted >= 5 and counted % 5 == 0  # every handle at every step falls in one class
    rows = {r["threshold"]: r for r in s["thresholds"]}
    assert rows[0.3]["moved_off_above"] >= rows[1.5]["moved_off_above"]
    assert 0.0 <= rows[1.0]["drags_false_alarm"] <= 1.0
