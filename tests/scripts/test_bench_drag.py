"""scripts/bench_drag.py on the embedded model: a tiny run, its report, and --merge."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from server.engine.checkpoint import default_checkpoint_path

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(default_checkpoint_path() is None, reason="embedded generator not built")


def _bench():
    spec = importlib.util.spec_from_file_location("bench_drag", ROOT / "scripts" / "bench_drag.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_report_rows_columns_and_merge(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Two pairs with a short budget give one row per (points, method) with every column, and a
    second run merges those rows instead of repeating the optimiser; another seed is refused."""
    bench = _bench()
    first = tmp_path / "a.json"
    common = ["--pairs", "2", "--points", "1", "5", "--threads", "1", "--no-progress", "--protocol", "shift"]
    methods = ["--methods", "none", "optimize"]
    assert bench.main([*common, *methods, "--max-steps", "3", "--json", str(first)]) == 0
    report = json.loads(first.read_text())
    assert report["protocol"] == "synthfaces-landmarks-v1-shift" and report["pairs"] == 2
    assert [(r["points"], r["method"]) for r in report["rows"]] == [
        ("1", "none"),
        ("1", "optimize"),
        ("5", "none"),
        ("5", "optimize"),
    ]
    for r in report["rows"]:
        assert {"md", "md_ratio", "fid_detector", "seconds_median", "seconds_p90", "steps_median"} <= set(r)
        assert len(r["md_per_pair"]) == 2
    none, opt = report["rows"][0], report["rows"][1]
    assert none["md_ratio"] == pytest.approx(1.0) and none["steps_median"] == 0
    assert 1 <= opt["steps_median"] <= 3 and opt["seconds_median"] > 0
    assert "optimize" in capsys.readouterr().out

    second = tmp_path / "b.json"
    assert bench.main([*common, *methods, "--merge", str(first), "--json", str(second)]) == 0
    merged = json.loads(second.read_text())
    assert [r["md_per_pair"] for r in merged["rows"]] == [r["md_per_pair"] for r in report["rows"]]

    with pytest.raises(SystemExit, match="measured other edits"):
        bench.main([*common, "--seed", "5", "--methods", "none", "--merge", str(first)])
